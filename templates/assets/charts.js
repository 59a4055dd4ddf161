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
