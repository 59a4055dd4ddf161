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

from generator.errors import AtlasError
from generator.points import POINT_MEANING

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
ORDER = ("norms", "attn_vs_mlp", "layerwise", "positions", "pos_embed", "repeat", "vocab")
SCATTER_CANVAS = 5000  # svg up to ~5k points, canvas beyond (see NOTES.md timings)
HEADLINES = (("norms", "pos0_norm_ratio", "position-0 norm ratio"),
             ("attn_vs_mlp", "attn_mlp_separability", "attn/MLP separability"),
             ("positions", "raw_evr_pc1", "position PC1 variance"),
             ("positions", "raw_cycles_pc1", "position PC1 cycles"),
             ("positions", "raw_periodicity", "position periodicity"),
             ("pos_embed", "wpe_periodicity", "learned-position periodicity"))
CLAIMS = (("norms", "pos0_norm_ratio", "pos0_norm_ratio_min",
           "position 0 norm is at least {t}x the median position in middle blocks"),
          ("attn_vs_mlp", "attn_mlp_separability", "attn_mlp_separability_min",
           "attention and MLP outputs are linearly separable above {t} in middle blocks"),
          ("pos_embed", "wpe_periodicity", "position_periodicity_min",
           "learned position components are periodic (power share above {t})"),
          ("positions", "raw_periodicity", "position_periodicity_min",
           "residual position components are periodic (power share above {t})"))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _json(p: Path) -> Any:
    return json.loads(p.read_text(encoding="utf-8"))


def load_build(artifacts: Path) -> dict[str, Any]:
    summary_path = artifacts / "summary.json"
    if not summary_path.is_file():
        raise AtlasError(str(artifacts), "no summary.json: the suite has not been run here",
                         "run `python -m generator run` (or `make site`) first")
    summary = _json(summary_path)
    manifest = _json(artifacts / "manifest.json") if (artifacts / "manifest.json").is_file() else {}
    models = []
    for name in summary["models"]:
        status = _json(artifacts / name / "status.json") if (artifacts / name / "status.json").is_file() \
            else {"status": "skipped", "reason": "no status recorded"}
        prov = status.get("provenance", {})
        ident = prov.get("revision") or prov.get("sha256") or "—"
        exps = {}
        for exp in ORDER:
            folder = artifacts / name / exp
            if f"{name}/{exp}" in manifest and (folder / "provenance.json").is_file():
                exps[exp] = {"folder": folder, "prov": _json(folder / "provenance.json"),
                             "metrics": _json(folder / "metrics.json"),
                             "run": _json(folder / "run.json") if (folder / "run.json").is_file() else {}}
        models.append({"name": name, "status": status["status"], "reason": status.get("reason", ""),
                       "source": prov.get("id") or prov.get("source", "—"), "ident": ident,
                       "experiments": exps})
    return {"summary": summary, "models": models}


def claims_for(model: dict, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for exp, metric, key, text in CLAIMS:
        e = model["experiments"].get(exp)
        if not e or e["prov"].get("status") != "ok" or metric not in e["metrics"]:
            continue
        value, t = e["metrics"][metric]["value"], thresholds[key]
        holds = value is not None and value >= t
        out.append({"model": model["name"], "page": exp, "text": text.format(t=t),
                    "value": fmt(value), "threshold": fmt(t), "exp": exp,
                    "verdict": "holds" if holds else "does not hold",
                    "css": "holds" if holds else "fails"})
    return out


def render(artifacts: Path, docs: Path) -> None:
    build = load_build(artifacts)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
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
        cells = []
        for exp, metric, _ in HEADLINES:
            e = m["experiments"].get(exp)
            cells.append(fmt(e["metrics"][metric]["value"]) if e and metric in e["metrics"] else "—")
        headline_rows.append({"model": m["name"], "cells": cells})
    pages = {"index.md": env.get_template("index.md.j2").render(
        title=summary.get("title", "latent-atlas"), models=models, artifacts=str(artifacts),
        headlines=[{"page": e, "label": label} for e, _, label in HEADLINES],
        headline_rows=headline_rows, claims=all_claims)}
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
        pages[f"{exp}.md"] = env.get_template("experiment.md.j2").render(
            title=title, doc=doc, sections=sections, artifacts=str(artifacts))
    pages["methods.md"] = env.get_template("methods.md.j2").render(points=list(POINT_MEANING.items()))
    from generator.adapters_list import SUPPORTED

    pages["models.md"] = env.get_template("models.md.j2").render(supported=", ".join(SUPPORTED))
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
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
        rows = len(_json(e["folder"] / f"{c}.data.json"))
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
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def build_site(config: Path = ROOT / "mkdocs.yml", site: Path = ROOT / "site") -> None:
    """`mkdocs build --strict` into a temp folder, then swap it in."""
    tmp = Path(tempfile.mkdtemp(dir=site.parent, prefix=f".{site.name}.tmp-"))
    try:
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                            "-f", str(config), "-d", str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            raise AtlasError("mkdocs build", (r.stderr or r.stdout).strip()[-2000:],
                             "fix the page or template named above; site/ was left as it was")
        _swap(tmp, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
