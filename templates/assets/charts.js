// Render every chart figure with the vendored vega-embed; again after Material's instant navigation.
(function () {
  function render() {
    document.querySelectorAll("figure.atlas-chart:not([data-done])").forEach(function (fig) {
      fig.setAttribute("data-done", "pending");
      var url = fig.getAttribute("data-spec");
      var base = url.substring(0, url.lastIndexOf("/") + 1);
      fetch(url)
        .then(function (r) { return r.json(); })
        .then(function (spec) {
          var view = fig.querySelector(".atlas-chart-view");
          return window.vegaEmbed(view, spec, {
            renderer: fig.getAttribute("data-renderer") || "svg",
            actions: false,
            loader: { baseURL: base },
          });
        })
        .then(function () {
          fig.setAttribute("data-done", "rendered");
          var still = fig.querySelector("img.atlas-static");
          if (still) still.remove();
        })
        .catch(function (err) { fig.setAttribute("data-done", "failed"); console.error(err); });
    });
  }
  if (window.document$ && window.document$.subscribe) { window.document$.subscribe(render); }
  else { document.addEventListener("DOMContentLoaded", render); }
})();

// Sortable tables (class "atlas-sortable"): a click on a heading sorts by that column, numbers
// as numbers ("49,152", "1.2M" read as values), a second click reverses. Hand-written: a dozen
// lines, where a table-sorting library would be one more vendored file for the offline site.
(function () {
  function value(cell) {
    var t = cell.textContent.trim().replace(/,/g, "");
    var m = t.match(/^(-?[\d.]+(?:e[-+]?\d+)?)([kMG]?)$/i);
    if (!m) return t.toLowerCase();
    return parseFloat(m[1]) * ({ k: 1e3, M: 1e6, G: 1e9 }[m[2]] || 1);
  }
  function setup() {
    document.querySelectorAll("table.atlas-sortable:not([data-sortable])").forEach(function (table) {
      table.setAttribute("data-sortable", "1");
      table.querySelectorAll("thead th").forEach(function (th, col) {
        th.style.cursor = "pointer";
        th.addEventListener("click", function () {
          var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
          var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
          th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
          rows.sort(function (a, b) {
            var x = value(a.cells[col]), y = value(b.cells[col]);
            if (typeof x !== typeof y) return (typeof x === "number" ? -1 : 1) * dir;
            return (x < y ? -1 : x > y ? 1 : 0) * dir;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }
  if (window.document$ && window.document$.subscribe) { window.document$.subscribe(setup); }
  else { document.addEventListener("DOMContentLoaded", setup); }
})();
