"""Artifacts → charts and Markdown pages in docs/ (Jinja, escaped) → `mkdocs build` → site/.

Reads only the artifact files and the experiment declarations: it never imports torch. Charts
are drawn here from the stored tables, so a chart or template change needs no recompute. Both
docs/ and site/ are built in a temporary folder and swapped in whole, so a failed build never
leaves a half-rendered site.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from generator import architectures
from generator.artifacts import table_csv
from generator.capture.sites import POINT_MEANING
from generator.errors import AtlasError
from generator.experiment import ChartView, Experiment, registry
from generator.fsutil import NO_SPACE, disk_full, swap_in, temp_dir_for
from generator.site import compare, history
from generator.site import pages as page_words
from generator.site.chart_files import chart_files
from generator.site.findings import claims_for, fmt, headline_values, headlines, load_build

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = ROOT / "templates"
SCATTER_CANVAS = 5000  # svg up to ~5k points, canvas beyond (see NOTES.md timings)


# Characters that Markdown (and its attr_list / md_in_html extensions) reads as syntax. As
# numeric entities they show as themselves and never form a link, emphasis or attribute list.
_MARKDOWN = {c: f"&#{ord(c)};" for c in "\\`*_{}[]#!|"}


def escape(value: Any) -> markupsafe.Markup:
    """Any user-controlled value, safe in HTML text, HTML attributes and Markdown alike.

    Autoescape alone stops HTML tags but not Markdown: `[x](javascript:alert(1))` in a title
    became a working link. Values the templates mark as trusted (`Markup`) pass unchanged.
    """
    if isinstance(value, markupsafe.Markup):
        return value
    return markupsafe.Markup("".join(_MARKDOWN.get(c) or markupsafe.escape(c) for c in str(value)))


def _code_spans(text: str) -> markupsafe.Markup:
    """Declaration text (trusted, but escaped all the same) with its `x` spans shown as code."""
    return markupsafe.Markup(re.sub(r"&#96;(.+?)&#96;", r"<code>\1</code>", str(escape(text))))


def environment() -> jinja2.Environment:
    """Jinja with every `{{ value }}` escaped for HTML and Markdown both."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              finalize=escape, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def render(artifacts: Path, docs: Path) -> None:
    """Write every page of the site into `docs`, swapped in whole (a failure leaves docs as it was)."""
    build = load_build(artifacts)
    tmp = temp_dir_for(Path(docs).resolve())
    try:
        _write_pages(build, environment(), tmp, artifacts)
        swap_in(tmp, Path(docs).resolve())
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(Path(docs), exc) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_pages(build: dict[str, Any], env: jinja2.Environment, out: Path, artifacts: Path) -> None:
    summary, models = build["summary"], build["models"]
    thresholds = summary.get("claims", {})
    all_claims = [c for m in models for c in claims_for(m, thresholds)]
    heads = headlines()
    headline_rows = []
    for m in models:
        values = headline_values(m)
        headline_rows.append({"model": m.name, "cells": [fmt(values.get(h["label"])) for h in heads]})
    pages: dict[str, str] = {}  # the home page is written last: it shows the pages' charts
    nav = [("Home", "index.md")]
    by_exp: dict[str, list[dict[str, Any]]] = {}
    for name, exp in registry().items():
        sections = [_section(m, exp, out, summary, [c for c in all_claims
                                                    if c["model"] == m.name and c["exp"] == name])
                    for m in models]
        by_exp[name] = sections
        pages[f"{name}.md"] = env.get_template("experiment.md.j2").render(
            title=exp.title, doc=markupsafe.Markup(exp.doc.strip()), sections=sections,
            artifacts=str(artifacts), empty_note=markupsafe.Markup(exp.empty_note.strip())
            if not any(s["status"] == "ok" for s in sections) else "")
        nav.append((exp.title, f"{name}.md"))
    past = history.read(artifacts)
    pages["index.md"] = env.get_template("index.md.j2").render(
        title=summary.get("title", "latent-atlas"), models=models, artifacts=str(artifacts),
        headlines=heads, headline_rows=headline_rows, claims=all_claims,
        findings=page_words.findings(registry(), by_exp, all_claims),
        not_built=[{"name": m.name, "reason": page_words.short_reason(m.name, m.reason),
                    "full": m.reason} for m in models if m.status != "ok"])
    pages["compare.md"] = _compare_page(env, build, out, past, artifacts)
    nav.insert(1, ("Compare models", "compare.md"))
    pages["changelog.md"] = env.get_template("changelog.md.j2").render(
        artifacts=str(artifacts), history=past, changes=history.changes(past), fmt=fmt)
    pages["methods.md"] = env.get_template("methods.md.j2").render(
        points=list(POINT_MEANING.items()), paper=page_words.PAPER_URL,
        paper_code=page_words.PAPER_CODE,
        differences=page_words.paper_differences(models, summary.get("seed")),
        figures=page_words.figure_map(registry(), by_exp))
    pages["models.md"] = env.get_template("models.md.j2").render(
        families=architectures.families(), schemes=architectures.SCHEMES,
        absent=architectures.ABSENT, code=_code_spans)
    nav += [("Changelog", "changelog.md"), ("Methods", "methods.md"),
            ("Supported architectures", "models.md")]
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / NAV_FILE).write_text(json.dumps(nav, indent=1), encoding="utf-8")
    _assets(out)


def _compare_page(env: jinja2.Environment, build: dict[str, Any], out: Path,
                  past: dict[str, list[dict[str, Any]]], artifacts: Path) -> str:
    """The Compare page: cross-model table, relative-depth curves, history per model."""
    summary, models = build["summary"], build["models"]
    done = compare.built(models)
    rel = "assets/charts/_compare"
    (out / rel).mkdir(parents=True, exist_ok=True)
    line = f"{summary.get('title', 'latent-atlas')} · {len(done)} model(s) · seed {summary.get('seed')}"
    figures: dict[str, list[dict[str, str]]] = {"curves": [], "histories": []}
    for cname, chart in compare.charts(models, past).items():
        for fname, text in chart_files(cname, chart, line, {"models": [m.name for m in done]}).items():
            (out / rel / fname).write_text(text, encoding="utf-8")
        fig = {"spec": f"{rel}/{cname}.vl.json", "svg": f"{rel}/{cname}.svg",
               "data": f"{rel}/{cname}.data.json", "title": chart.to_dict()["title"]["text"]}
        if cname.startswith("history-"):
            figures["histories"].append({**fig, "model": cname.removeprefix("history-")})
        else:
            figures["curves"].append(fig)
    table = compare.table(done, summary.get("claims", {}))
    return env.get_template("compare.md.j2").render(
        artifacts=str(artifacts), single=done[0].name if len(done) == 1 else "",
        rows=table["rows"] if len(done) >= 2 else [], headlines=table["headlines"],
        claims=table["claims"], curves=figures["curves"], histories=figures["histories"],
        pages=[{"page": n, "title": e.title} for n, e in registry().items()])


def _section(m: Any, exp: Experiment, out: Path, summary: dict[str, Any],
             claims: list[dict]) -> dict[str, Any]:
    """One model's part of an experiment page: charts drawn from its stored tables, numbers, claims."""
    e = m.experiments.get(exp.name)
    if e is None or e.status != "ok":
        if e is not None:
            reason = "not applicable: " + " ".join(e.result.notes)
        else:
            reason = m.rejected.get(exp.name) or (m.reason if m.status != "ok" else "") or \
                "not built in this run"
        return {"model": m.name, "status": "skipped", "reason": reason, "provenance": ""}
    rel = f"assets/charts/{m.name}/{exp.name}"
    dest = out / rel
    dest.mkdir(parents=True, exist_ok=True)
    prov = e.provenance
    mp, v = prov.get("model", {}), prov.get("versions", {})
    ident = mp.get("revision") or (mp.get("sha256") or "")[:12]
    line = (f"{m.name} · {ident} · seed {prov.get('seed')} · latent-atlas {v.get('latent-atlas')} · "
            f"transformers {v.get('transformers')}")
    view = ChartView(m.name, int(summary.get("seed", prov.get("seed", 0))),
                     int(summary.get("max_chart_points", 4000)),
                     thresholds=summary.get("claims", {}))
    charts = []
    for cname, chart in exp.charts(e.result, view).items():
        files = chart_files(cname, chart, line, {"provenance": prov})
        for fname, text in files.items():
            (dest / fname).write_text(text, encoding="utf-8")
        rows = len(json.loads(files[f"{cname}.data.json"]))
        charts.append({"name": cname, "spec": f"{rel}/{cname}.vl.json", "svg": f"{rel}/{cname}.svg",
                       "data": f"{rel}/{cname}.data.json",
                       "renderer": "canvas" if rows > SCATTER_CANVAS else "svg",
                       "paper": exp.paper_figures.get(cname, "")})
    for f in e.folder.iterdir():  # the stored result itself, for download
        if f.suffix == ".json":
            shutil.copy2(f, dest / f.name)
    tables = []
    for t in exp.tables:
        rows = e.result.tables.get(t) or []
        (dest / f"{t}.csv").write_text(table_csv(rows), encoding="utf-8")
        if rows:
            shown = [{k: fmt(x) for k, x in r.items()} for r in rows]
            tables.append({"name": t.replace("_", " "), "rows": shown, "csv": f"{rel}/{t}.csv"})
    line = (f"Made from {m.name} ({mp.get('id') or mp.get('source')}, "
            f"{mp.get('revision') or 'sha256 ' + str(mp.get('sha256', ''))[:16]}), seed {prov.get('seed')}, "
            f"on {e.run.get('date', '?')} in {fmt(e.run.get('wall_seconds'))} s; "
            f"latent-atlas {v.get('latent-atlas')}, torch {v.get('torch')}, "
            f"transformers {v.get('transformers')}, scikit-learn {v.get('scikit-learn')}, "
            f"umap-learn {v.get('umap-learn')}.")
    metrics = {k: {"value": fmt(e.result.metrics.get(k)), "meaning": meaning}
               for k, meaning in exp.metrics.items()}
    return {"model": m.name, "status": "ok", "charts": charts, "tables": tables,
            "metrics": metrics, "claims": claims, "notes": e.result.notes, "provenance": line,
            "computed_on": page_words.computed_on(m.name, prov, e.result.facts)}


def _assets(out: Path) -> None:
    import vl_convert

    js = out / "assets/js"
    js.mkdir(parents=True, exist_ok=True)
    (js / "vega-embed.js").write_text("(function () {\n" + vl_convert.javascript_bundle() + "\n})();\n",
                                      encoding="utf-8")
    shutil.copy2(TEMPLATES / "assets/charts.js", js / "charts.js")
    css = out / "assets/css"
    css.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TEMPLATES / "assets/atlas.css", css / "atlas.css")


NAV_FILE = ".nav.json"
"""Written by `render` into docs/ (MkDocs skips dotfiles): the pages in reading order."""


def build_site(docs: Path, site: Path, config: Path = ROOT / "mkdocs.yml") -> None:
    """`mkdocs build --strict` of exactly `docs` into a temp folder, then swap it in as `site`.

    The repository's mkdocs.yml holds the theme and extensions; a generated child config
    (`INHERIT`) names the docs folder and the nav that `render` wrote, so the site is always
    built from the docs just rendered, wherever they are.
    """
    docs, site = Path(docs).resolve(), Path(site).resolve()
    nav_path = docs / NAV_FILE
    if not nav_path.is_file():
        raise AtlasError(str(docs), "not a rendered docs folder (no navigation file)",
                         "run `python -m generator render --docs DIR` first")
    nav = json.loads(nav_path.read_text(encoding="utf-8"))
    tmp = temp_dir_for(site)
    try:
        child = tmp / "mkdocs.yml"
        child.write_text(json.dumps({"INHERIT": str(Path(config).resolve()), "docs_dir": str(docs),
                                     "nav": [{t: f} for t, f in nav]}), encoding="utf-8")
        out = tmp / "site"
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                            "-f", str(child), "-d", str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            raise AtlasError("mkdocs build", (r.stderr or r.stdout).strip()[-2000:],
                             "fix the page or template named above; site/ was left as it was")
        swap_in(out, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
