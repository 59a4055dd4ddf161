"""Artifacts → Markdown pages in docs/ (Jinja, autoescaped) → `mkdocs build` → site/.

Reads only the artifact files: it never imports torch. Both docs/ and site/ are built in a
temporary folder and swapped in whole, so a failed build never leaves a half-rendered site.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from generator import history
from generator.errors import AtlasError
from generator.findings import HEADLINES, ORDER, claims_for, fmt, headline_values, load_build
from generator.points import POINT_MEANING

ROOT = Path(__file__).resolve().parent.parent
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
    text = str(markupsafe.escape(value))
    return markupsafe.Markup("".join(_MARKDOWN.get(c, c) for c in text))


def environment() -> jinja2.Environment:
    """Jinja with every `{{ value }}` escaped for HTML and Markdown both."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              finalize=escape, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def render(artifacts: Path, docs: Path) -> None:
    build = load_build(artifacts)
    env = environment()
    tmp = Path(tempfile.mkdtemp(dir=docs.parent if docs.parent.exists() else None,
                                prefix=f".{docs.name}.tmp-"))
    try:
        _write_pages(build, env, tmp, artifacts)
        _swap(tmp, docs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_pages(build: dict[str, Any], env: jinja2.Environment, out: Path, artifacts: Path) -> None:
    summary, models = build["summary"], build["models"]
    thresholds = summary["claims"]
    all_claims = [c for m in models for c in claims_for(m, thresholds)]
    headline_rows = []
    for m in models:
        values = headline_values(m)
        headline_rows.append({"model": m["name"],
                              "cells": [fmt(values.get(label)) for _, _, label in HEADLINES]})
    pages = {"index.md": env.get_template("index.md.j2").render(
        title=summary.get("title", "latent-atlas"), models=models, artifacts=str(artifacts),
        headlines=[{"page": e, "label": label} for e, _, label in HEADLINES],
        headline_rows=headline_rows, claims=all_claims)}
    titles = {}
    for exp in ORDER:
        sections, doc, title = [], "", exp
        for m in models:
            e = m["experiments"].get(exp)
            if e is None:
                sections.append({"model": m["name"], "status": "skipped", "provenance": "",
                                 "reason": m["reason"] or "not built in this run"})
                continue
            prov = e["prov"]
            doc, title = prov.get("doc", ""), prov.get("title", exp)
            sections.append(_section(m, exp, e, out, [c for c in all_claims
                                                      if c["model"] == m["name"] and c["exp"] == exp]))
        titles[exp] = title
        pages[f"{exp}.md"] = env.get_template("experiment.md.j2").render(
            title=title, doc=markupsafe.Markup(doc), sections=sections, artifacts=str(artifacts))
    past = history.read(artifacts)
    pages["changelog.md"] = env.get_template("changelog.md.j2").render(
        artifacts=str(artifacts), history=past, changes=history.changes(past), fmt=fmt)
    pages["methods.md"] = env.get_template("methods.md.j2").render(points=list(POINT_MEANING.items()))
    from generator.adapters_list import SUPPORTED

    pages["models.md"] = env.get_template("models.md.j2").render(supported=", ".join(SUPPORTED))
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
    nav = [("Home", "index.md")] + [(titles[e], f"{e}.md") for e in ORDER] + [
        ("Changelog", "changelog.md"), ("Methods", "methods.md"), ("Other models", "models.md")]
    (out / NAV_FILE).write_text(json.dumps(nav, indent=1), encoding="utf-8")
    _assets(out)


def _section(m: dict, exp: str, e: dict, out: Path, claims: list[dict]) -> dict[str, Any]:
    prov = e["prov"]
    if prov.get("status") != "ok":
        return {"model": m["name"], "status": "skipped", "reason": " ".join(prov.get("notes", [])),
                "provenance": ""}
    rel = f"assets/charts/{m['name']}/{exp}"
    dest = out / rel
    dest.mkdir(parents=True, exist_ok=True)
    for f in e["folder"].iterdir():
        shutil.copy2(f, dest / f.name)
    charts = []
    for c in prov["charts"]:
        rows = len(json.loads((e["folder"] / f"{c}.data.json").read_text(encoding="utf-8")))
        charts.append({"name": c, "spec": f"{rel}/{c}.vl.json", "svg": f"{rel}/{c}.svg",
                       "data": f"{rel}/{c}.data.json",
                       "renderer": "canvas" if rows > SCATTER_CANVAS else "svg"})
    tables = []
    for t in prov["tables"]:
        with open(e["folder"] / f"{t}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows:
            tables.append({"name": t.replace("_", " "), "rows": rows, "csv": f"{rel}/{t}.csv"})
    mp = prov["model"]
    ident = mp.get("revision") or f"sha256 {str(mp.get('sha256', ''))[:16]}"
    v = prov["versions"]
    line = (f"Made from {m['name']} ({mp.get('id') or mp.get('source')}, {ident}), seed {prov['seed']}, "
            f"on {e['run'].get('date', '?')} in {fmt(e['run'].get('wall_seconds'))} s; "
            f"latent-atlas {v['latent-atlas']}, torch {v['torch']}, transformers {v['transformers']}, "
            f"scikit-learn {v['scikit-learn']}, umap-learn {v['umap-learn']}.")
    metrics = {k: {"value": fmt(x["value"]), "meaning": x["meaning"]} for k, x in e["metrics"].items()}
    return {"model": m["name"], "status": "ok", "charts": charts, "tables": tables,
            "metrics": metrics, "claims": claims, "provenance": line}


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


def _swap(new: Path, final: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    new.chmod(0o777 & ~umask)  # mkdtemp made it 0700
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


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
    site.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=site.parent, prefix=f".{site.name}.tmp-"))
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
        out.chmod(0o755)
        _swap(out, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
