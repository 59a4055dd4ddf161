"""Lint of every chart the renderer writes, as a reader meets it (slow: builds a small site).

For each Vega-Lite spec under docs/assets/charts: every x and y axis has a title; no title (axis,
legend, tooltip) is a raw field (`block:Q`, `pc1`, `mean_norm`); its data is inline or resolves
to the file beside it, and every field it encodes exists there; tokens in its data are shown
visibly. The static SVG is checked as drawn (Vega's own axis descriptions), so a title merged
from untitled layers ("start, end, block") is caught too. Then every page is opened in Chromium:
each chart must reach `data-done="rendered"` with no console error.

Tests are per page (experiment), so a failure names the page whose charts need fixing.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sitebuild import REPEAT_TOKENS, serve

from generator.experiment import registry

pytestmark = pytest.mark.slow

GROUPS = [*registry(), "_compare"]
"""One lint group per experiment page, plus the cross-model Compare page's charts."""
CHANNELS_WITH_LEGEND = ("color", "fill", "stroke", "shape", "size", "opacity", "strokeDash",
                        "strokeWidth", "fillOpacity", "strokeOpacity")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def raw_title(title: Any) -> bool:
    """A title a reader cannot read: an encoding (`block:Q`) or a code name (`mean_norm`, `pc1`)."""
    if isinstance(title, list):
        title = " ".join(map(str, title))
    t = str(title).strip()
    if not t or re.search(r"\w:\w", t) or t.endswith(":"):  # `block:Q`; "block 0: from ..." is words
        return True
    if IDENT.fullmatch(t) and ("_" in t or any(c.isdigit() for c in t)):
        return True
    return any("_" in w and IDENT.fullmatch(w.strip("(),")) for w in t.split())


def _specs(docs: Path, group: str) -> list[Path]:
    charts = docs / "assets/charts"
    if group == "_compare":
        return sorted((charts / "_compare").glob("*.vl.json"))
    return sorted(charts.glob(f"*/{group}/*.vl.json"))


def _name(docs: Path, spec: Path) -> str:
    return str(spec.relative_to(docs / "assets/charts")).removesuffix(".vl.json")


# -- walking a spec ---------------------------------------------------------------------------

ANY = "*"


def _created(transforms: list[dict]) -> set[str]:
    """Fields a transform list adds to its data (ANY when it cannot be known: pivot)."""
    out: set[str] = set()
    for t in transforms or []:
        if "pivot" in t:
            out.add(ANY)
        if "fold" in t:
            out |= set(t.get("as", ["key", "value"]))
        if "density" in t:
            out |= set(t.get("as", ["value", "density"]))
        for key in ("calculate", "bin", "timeUnit", "stack", "flatten", "lookup", "impute",
                    "regression", "loess", "quantile", "extent"):
            if key in t and "as" in t:
                out |= set(t["as"]) if isinstance(t["as"], list) else {t["as"]}
        if "lookup" in t:
            out |= set((t.get("from") or {}).get("fields") or [ANY])
        for key in ("aggregate", "joinaggregate", "window"):
            for item in t.get(key, []) if isinstance(t.get(key), list) else []:
                if "as" in item:
                    out.add(item["as"])
        if "aggregate" in t:
            out |= set(t.get("groupby", []))
    return out


def units(spec: dict, data: Any = None, created: frozenset = frozenset(),
          shared: dict[str, list] | None = None):
    """Every unit (mark) spec with the data it reads, the fields transforms add, and the explicit
    x/y titles of the layer it shares axes with."""
    data = spec.get("data", data)
    created = created | _created(spec.get("transform", []))
    if "layer" in spec:
        independent = (spec.get("resolve") or {}).get("axis") or {}
        titles = {ch: [] if independent.get(ch) == "independent" else None for ch in ("x", "y")}
        group = {ch: (shared or {}).get(ch, []) if titles[ch] is None else titles[ch]
                 for ch in ("x", "y")}
        for ch in ("x", "y"):
            if titles[ch] is None:  # shared with the siblings: collect their explicit titles
                group[ch] = [*group[ch], *_layer_titles(spec, ch)]
        for child in spec["layer"]:
            yield from units(child, data, created, group)
    for key in ("hconcat", "vconcat", "concat"):
        for child in spec.get(key, []):
            yield from units(child, data, created, None)
    if isinstance(spec.get("spec"), dict):
        yield from units(spec["spec"], data, created, None)
    if "mark" in spec:
        yield spec, data, created, shared or {}


def _layer_titles(spec: dict, ch: str) -> list:
    out = []
    for child in spec.get("layer", []):
        enc = (child.get("encoding") or {}).get(ch)
        if isinstance(enc, dict) and _explicit(enc):
            out.append(_explicit(enc))
        out += _layer_titles(child, ch)
    return out


def _explicit(enc: dict) -> Any:
    axis = enc.get("axis")
    if isinstance(axis, dict) and axis.get("title"):
        return axis["title"]
    return enc.get("title") or None


def _defs(enc: Any) -> list[dict]:
    """A channel's field definitions (a tooltip list, a condition) as a flat list."""
    items = enc if isinstance(enc, list) else [enc]
    out = []
    for d in items:
        if isinstance(d, dict):
            out.append(d)
            cond = d.get("condition")
            out += [c for c in (cond if isinstance(cond, list) else [cond]) if isinstance(c, dict)]
    return out


def _field(d: dict) -> str | None:
    f = d.get("field")
    if isinstance(f, dict):  # {"repeat": ...}
        return None
    return f.split(".")[0].replace("\\", "") if isinstance(f, str) else None


def _rows(data: Any, spec_root: dict, folder: Path) -> tuple[list[dict] | None, str]:
    """The rows a data reference resolves to, or (None, why not)."""
    if not isinstance(data, dict):
        return None, "no data"
    if "values" in data:
        return data["values"], ""
    if "url" in data:
        path = folder / data["url"]
        if not path.is_file():
            return None, f"data url {data['url']!r} does not exist beside the spec"
        try:
            return json.loads(path.read_text(encoding="utf-8")), ""
        except json.JSONDecodeError as exc:
            return None, f"data url {data['url']!r} is not JSON ({exc})"
    if "name" in data:
        rows = (spec_root.get("datasets") or {}).get(data["name"])
        return (rows, "") if rows is not None else (None, f"dataset {data['name']!r} is not defined")
    if "sequence" in data or "sphere" in data or "graticule" in data:
        return [], ""
    return None, f"unreadable data {data!r}"


# -- the lints ---------------------------------------------------------------------------------

def axis_problems(spec: dict) -> list[str]:
    out = []
    for unit, _, _, shared in units(spec):
        enc = unit.get("encoding") or {}
        for ch in ("x", "y"):
            d = enc.get(ch)
            if not isinstance(d, dict) or not (_field(d) or d.get("aggregate")):
                continue
            if d.get("axis", {}) is None:
                continue
            title = _explicit(d)
            if title is None and not shared.get(ch):
                out.append(f"{ch} axis of `{_field(d) or d.get('aggregate')}` has no title")
            elif title is not None and raw_title(title):
                out.append(f"{ch} axis title {title!r} is or holds a raw field name")
    return list(dict.fromkeys(out))


def legend_and_tooltip_problems(spec: dict) -> list[str]:
    out = []
    for unit, _, _, _ in units(spec):
        enc = unit.get("encoding") or {}
        for ch, d in enc.items():
            if ch == "tooltip":
                for t in _defs(d):
                    title = t.get("title") or _field(t)
                    if title and raw_title(title):
                        out.append(f"tooltip line {title!r} is a raw field name (give it a title)")
            elif ch in CHANNELS_WITH_LEGEND and isinstance(d, dict) and _field(d) \
                    and d.get("legend", {}) is not None:
                title = (d.get("legend") or {}).get("title") or d.get("title") or _field(d)
                if raw_title(title):
                    out.append(f"{ch} legend title {title!r} is or holds a raw field name")
    return list(dict.fromkeys(out))


def data_problems(spec: dict, folder: Path) -> list[str]:
    out = []
    for unit, data, created, _ in units(spec):
        rows, why = _rows(data, spec, folder)
        if rows is None:
            out.append(f"{unit.get('mark')} layer: {why}")
            continue
        if not rows or ANY in created:
            continue
        keys = set().union(*(r.keys() for r in rows[:2000] if isinstance(r, dict))) | created
        for ch, d in (unit.get("encoding") or {}).items():
            for item in _defs(d):
                f = _field(item)
                if f and f not in keys:
                    out.append(f"{ch} encodes `{f}`, which the {_mark(unit)} layer's data lacks "
                               f"(it has {sorted(keys)[:8]})")
    return out


def _mark(unit: dict) -> str:
    m = unit.get("mark")
    return m.get("type", "?") if isinstance(m, dict) else str(m)


def token_problems(spec: dict, folder: Path) -> list[str]:
    """Token text in chart data must be visible: no bare spaces, newlines or control bytes."""
    out = []
    for _, data, _, _ in units(spec):
        rows, _ = _rows(data, spec, folder)
        for r in rows or []:
            if not isinstance(r, dict):
                continue
            for k, v in r.items():
                if "token" in k.lower() and isinstance(v, str) and (
                        v != v.strip() or not v or any(ord(c) < 32 or ord(c) == 127 for c in v)):
                    out.append(f"`{k}` value {v!r} is invisible as drawn (use charts.visible_token)")
                    break
    return sorted(set(out))[:5]


AXIS_LABEL = re.compile(r'class="mark-group role-(axis|legend)"[^>]*?aria-label="([^"]*)"')


def svg_problems(svg: str, fields: set[str]) -> list[str]:
    """Axes and legends as drawn: Vega describes each, titled or not, in its aria-label."""
    out = []
    for role, label in AXIS_LABEL.findall(svg):
        label = html.unescape(label)
        m = re.search(r"titled '(.*?)' for ", label)
        if role == "axis" and not m:
            out.append(f"drawn {label.split(' for ')[0]} has no title")
            continue
        if not m:
            continue
        title = m.group(1)
        parts = [p.strip() for p in title.split(",")]
        if raw_title(title):
            out.append(f"drawn {role} title {title!r} is or holds a raw field name")
        elif len(parts) > 1 and all(p in fields for p in parts):
            out.append(f"drawn {role} title {title!r} merges untitled layers' field names")
    return out


def _fields(node: Any) -> set[str]:
    if isinstance(node, dict):
        out = {node["field"]} if isinstance(node.get("field"), str) else set()
        for v in node.values():
            out |= _fields(v)
        return out
    if isinstance(node, list):
        return set().union(*map(_fields, node)) if node else set()
    return set()


def _lint(site: Path, group: str, check) -> dict[str, list[str]]:
    docs = site / "docs"
    found = {}
    for path in _specs(docs, group):
        spec = json.loads(path.read_text(encoding="utf-8"))
        problems = check(spec, path)
        if problems:
            found[_name(docs, path)] = problems
    return found


def _report(found: dict[str, list[str]]) -> str:
    return "\n" + "\n".join(f"{chart}: " + "; ".join(p) for chart, p in sorted(found.items()))


# -- tests -------------------------------------------------------------------------------------

def test_every_page_wrote_charts_and_every_spec_is_linted(small_site):
    root, _ = small_site
    docs = root / "docs"
    linted = {p for g in GROUPS for p in _specs(docs, g)}
    every = set((docs / "assets/charts").rglob("*.vl.json"))
    assert every and every == linted, sorted(str(p) for p in every - linted)
    for name in registry():
        assert _specs(docs, name), f"no chart written for {name}"


@pytest.mark.parametrize("group", GROUPS)
def test_every_axis_has_a_title_in_words(small_site, group):
    found = _lint(small_site[0], group, lambda spec, _: axis_problems(spec))
    assert not found, _report(found)


@pytest.mark.parametrize("group", GROUPS)
def test_legends_and_tooltips_are_titled_in_words(small_site, group):
    found = _lint(small_site[0], group, lambda spec, _: legend_and_tooltip_problems(spec))
    assert not found, _report(found)


@pytest.mark.parametrize("group", GROUPS)
def test_axes_and_legends_as_drawn_are_titled_in_words(small_site, group):
    def check(spec, path):
        svg = path.with_name(path.name.replace(".vl.json", ".svg"))
        if not svg.is_file():
            return [f"no static SVG beside the spec ({svg.name})"]
        return svg_problems(svg.read_text(encoding="utf-8"), _fields(spec))

    found = _lint(small_site[0], group, check)
    assert not found, _report(found)


@pytest.mark.parametrize("group", GROUPS)
def test_chart_data_is_inline_or_resolvable(small_site, group):
    found = _lint(small_site[0], group, lambda spec, path: data_problems(spec, path.parent))
    assert not found, _report(found)


@pytest.mark.parametrize("group", GROUPS)
def test_tokens_in_chart_data_are_visible(small_site, group):
    found = _lint(small_site[0], group, lambda spec, path: token_problems(spec, path.parent))
    assert not found, _report(found)


def test_repeated_tokens_are_shown_visibly_on_their_page(small_site):
    root, _ = small_site
    page = html.unescape((root / "docs/repeat.md").read_text(encoding="utf-8"))
    assert "<td>␣a</td>" in page and "<td>\\n</td>" in page  # the table of repeated tokens
    trajectory = json.loads((root / "docs/assets/charts/tiny-gpt2/repeat/trajectory.data.json")
                            .read_text(encoding="utf-8"))
    sequences = {r["sequence"] for r in trajectory}
    assert {"repeated “␣a”", "repeated “\\n”"} <= sequences, sequences
    assert len(REPEAT_TOKENS) == len(sequences) - 1  # and the text baseline


def test_every_paper_figure_names_a_drawn_chart(small_site):
    """`paper_figures` keys must be chart names the experiment draws (tiny GPT-2 draws them all)."""
    root, _ = small_site
    stale = {}
    for name, exp in registry().items():
        drawn = {p.name.removesuffix(".vl.json")
                 for p in (root / "docs/assets/charts/tiny-gpt2" / name).glob("*.vl.json")}
        if set(exp.paper_figures) - drawn:
            stale[name] = sorted(set(exp.paper_figures) - drawn)
    assert not stale, stale


def test_the_lint_catches_what_it_is_for():
    """The rules themselves: raw encodings and code names are caught, words pass."""
    for bad in ("block:Q", "pc1", "PC1", "mean_norm", "value:Q", "Sum of mean_norm", ""):
        assert raw_title(bad), bad
    for good in ("block", "principal component 1", "mean L2 norm (log scale)", "UMAP dimension 2",
                 "sequence position", "position-0 norm / median", "token (id)",
                 "block (the step into it; block 0: from the embedding)"):
        assert not raw_title(good), good
    spec = {"data": {"values": [{"a": 1, "b": 2}]}, "layer": [
        {"mark": "rect", "encoding": {"x": {"field": "a", "type": "quantitative"}}},
        {"mark": "line", "encoding": {"x": {"field": "a", "type": "quantitative", "title": "A"},
                                      "y": {"field": "b", "type": "quantitative"}}}]}
    assert axis_problems(spec) == ["y axis of `b` has no title"]  # x is titled by a sibling
    spec["layer"][1]["encoding"]["y"]["title"] = "b:Q"
    assert axis_problems(spec) == ["y axis title 'b:Q' is or holds a raw field name"]
    spec["layer"][0]["encoding"]["color"] = {"field": "missing", "type": "nominal"}
    assert data_problems(spec, Path("."))[0].startswith("color encodes `missing`")
    drawn = ('<g class="mark-group role-axis" aria-label="X-axis titled \'start, end, block\' for a '
             'linear scale"><g class="mark-group role-axis" aria-label="Y-axis for a log scale">')
    assert len(svg_problems(drawn, {"start", "end", "block"})) == 2


def test_every_page_renders_its_charts_in_chromium(small_site):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (.ci/chromium.sh installs it)")
    from playwright.sync_api import sync_playwright

    root, port = small_site
    pages = sorted(p.name for p in (root / "site").glob("*.html") if p.name != "404.html")
    failed: dict[str, list[str]] = {}
    with serve(root / "site", port) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name in pages:
            errors.clear()
            page.goto(base + name, wait_until="networkidle")
            figures = page.locator("figure.atlas-chart")
            if figures.count():
                page.wait_for_function(
                    "() => [...document.querySelectorAll('figure.atlas-chart')].every("
                    "f => ['rendered', 'failed'].includes(f.getAttribute('data-done')))",
                    timeout=60_000)
            bad = [f"{figures.nth(i).get_attribute('data-spec')}: "
                   f"{figures.nth(i).get_attribute('data-done')}"
                   for i in range(figures.count())
                   if figures.nth(i).get_attribute("data-done") != "rendered"]
            if bad or errors:
                failed[name] = bad + [f"console: {e[:200]}" for e in errors]
        browser.close()
    assert not failed, json.dumps(failed, indent=1, ensure_ascii=False)
