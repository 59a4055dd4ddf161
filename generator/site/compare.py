"""The Compare page: all models of a build on one relative-depth axis, and across revisions.

One table of headline numbers and verdicts, one chart per finding with every model on relative
depth, and each model's numbers across the revisions the history recorded.

Per-model pages show one model at a time; the questions users ask are comparative (does the
position-0 norm appear in every family, where does separation peak). Curves come from the
experiments' own `comparisons` declarations, drawn from the stored tables: nothing here
recomputes a number, so the compare page always agrees with the per-model pages.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from generator import charts as ch
from generator.experiment import Comparison, registry
from generator.site.findings import Model, claims_for, fmt, headline_values, headlines

DEPTH_TITLE = "relative depth (block / (blocks - 1): 0 = first block, 1 = last)"


def built(models: list[Model]) -> list[Model]:
    """Models with at least one experiment built: the ones a comparison can draw."""
    return [m for m in models if m.status == "ok" and any(
        e.status == "ok" for e in m.experiments.values())]


def model_facts(m: Model) -> dict[str, Any]:
    """Family, blocks, size, dtype of a model, from any of its entries' provenance."""
    for e in m.experiments.values():
        facts = e.provenance.get("model", {})
        if facts.get("family"):
            return facts
    return {}


def n_blocks(m: Model, rows: list[dict[str, Any]]) -> int:
    """The model's depth, recorded at build time; older builds: one more than the last block."""
    recorded = model_facts(m).get("n_blocks")
    if recorded:
        return int(recorded)
    return max((int(r["block"]) for r in rows), default=0) + 1


def curves(comp: Comparison, exp_name: str, models: list[Model]) -> pd.DataFrame:
    """One row per (model, series, block): value and relative depth."""
    out = []
    for m in models:
        e = m.experiments.get(exp_name)
        if e is None or e.status != "ok":
            continue
        rows = comp.rows(e.result)
        depth = n_blocks(m, rows)
        family = model_facts(m).get("family", "—")
        for r in rows:
            out.append({"model": m.name, "family": family, "series": r.get("series", comp.y_title),
                        "block": int(r["block"]), "blocks": depth,
                        "relative_depth": int(r["block"]) / max(depth - 1, 1),
                        "value": r["value"]})
    return pd.DataFrame(out, columns=["model", "family", "series", "block", "blocks",
                                      "relative_depth", "value"])


def curve_chart(comp: Comparison, df: pd.DataFrame) -> alt.TopLevelMixin:
    """Lines per model (dash) coloured by family, one point shape per series; legend toggles."""
    pick = alt.selection_point(fields=["model"], bind="legend")
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("relative_depth:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("value:Q", title=comp.y_title,
                scale=alt.Scale(type="log") if comp.log_y else alt.Scale(zero=False)),
        color=alt.Color("family:N", title="family"),
        strokeDash=alt.StrokeDash("model:N", title="model (click to pick)"),
        shape=alt.Shape("series:N", title="series"),
        detail="series:N",
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=[ch.tip("model", numeric=False), ch.tip("family", numeric=False),
                 ch.tip("series", numeric=False), ch.tip("block"), ch.tip("blocks", "blocks"),
                 ch.tip("relative_depth", "relative depth"), ch.tip("value", comp.y_title)],
    ).add_params(pick).properties(width=620, height=300)


def table(models: list[Model], thresholds: dict[str, float]) -> dict[str, Any]:
    """The cross-model table: identity columns, one per headline number, one per claim."""
    heads = headlines()
    claim_texts: list[str] = []
    rows = []
    for m in models:
        facts = model_facts(m)
        values = headline_values(m)
        verdicts = {c["text"]: c for c in claims_for(m, thresholds)}
        for t in verdicts:
            if t not in claim_texts:
                claim_texts.append(t)
        size = facts.get("parameters")
        rows.append({"model": m.name, "family": facts.get("family", "—"),
                     "size": f"{size / 1e6:,.1f}M" if size else "—",
                     "revision": (m.ident or "—")[:12], "dtype": facts.get("dtype", "—"),
                     "headlines": [fmt(values.get(h["label"])) for h in heads],
                     "claims": verdicts})
    for r in rows:
        r["claims"] = [r["claims"].get(t, {"verdict": "—", "css": "unknown", "why": "",
                                             "text": t}) for t in claim_texts]
    return {"headlines": heads, "claims": claim_texts, "rows": rows}


def history_frames(history: dict[str, list[dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    """Per model with two or more recorded revisions: its headline numbers by revision."""
    out = {}
    for model, entries in sorted(history.items()):
        if len(entries) < 2:
            continue
        rows = []
        for i, e in enumerate(entries):
            for label, value in sorted(e.get("headlines", {}).items()):
                rows.append({"build": i + 1, "revision": str(e.get("ident", "—"))[:12],
                             "date": e.get("first_seen", e.get("date", "—")),
                             "number": label, "value": value})
        out[model] = pd.DataFrame(rows)
    return out


def history_chart(model: str, df: pd.DataFrame) -> alt.TopLevelMixin:
    """One small chart per headline number over the model's revisions, oldest first."""
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("build:O", title="revision, oldest to newest"),
        y=alt.Y("value:Q", title="value", scale=alt.Scale(zero=False)),
        tooltip=[ch.tip("number", numeric=False), ch.tip("revision", numeric=False),
                 ch.tip("date", "first built", numeric=False), ch.tip("value")],
    ).properties(width=180, height=120).facet(
        facet=alt.Facet("number:N", title=None), columns=3).resolve_scale(y="independent")


def charts(models: list[Model], history: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every chart of the page by file name: one per comparison, one per model's history."""
    out: dict[str, Any] = {}
    if len(built(models)) >= 2:
        for name, exp in registry().items():
            for comp in exp.comparisons:
                df = curves(comp, name, built(models))
                if len(df):
                    out[f"{name}-{comp.name}"] = ch.titled(
                        curve_chart(comp, df), comp.title,
                        [f"{df.model.nunique()} models; blocks mapped to relative depth"])
    for model, df in history_frames(history).items():
        out[f"history-{model}"] = ch.titled(
            history_chart(model, df), f"{model}: headline numbers across revisions",
            [f"{df.build.max()} revisions recorded"])
    return out
