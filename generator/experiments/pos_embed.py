"""Learned position embeddings: GPT-2's `wpe` table has a high-dimensional helical structure.

PCA of the table (one row per position); pairs of components drawn as a path through the
positions in order, coloured by position with the first and last position marked, and each
component's score over position with its dominant frequency (FFT). Rows whose norm is above 4x
the median row's, or that lie more than 8x the median row's distance from the others, are
reported and left out of the fit, as on the positions page, so one row cannot be a component
by itself. Rotary models (LLaMA family) and ALiBi models have no learned
table: their positions enter inside attention, so there is nothing to plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.analysis import outliers, periodic
from generator.experiment import ChartView, Claim, Context, Experiment, Headline, Needs, Result


@dataclass(frozen=True)
class Params:
    components: int = 6
    """Principal components fitted on the table's rows."""
    max_positions: int = 0
    """Use the first N rows of the table; 0 means all."""


def skip(ctx: Context, p: Params) -> str | None:
    if ctx.architecture.pos_embed is None:
        return (f"{ctx.model_name} uses {ctx.architecture.position_text(ctx.model.config)}: "
                "there is no learned position table to analyse")
    return None


def needs(ctx: Context, p: Params) -> Needs:
    return {}  # reads the model's weights, not its states


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    weight = ctx.architecture.position_table(ctx.model)
    table = weight.detach().float().cpu().numpy().astype(np.float64)
    if p.max_positions:
        table = table[: p.max_positions]
    norms = np.linalg.norm(table, axis=1)
    rel = outliers.times_median(norms)
    massive = outliers.massive_positions(norms)
    rest = np.flatnonzero(~np.isin(np.arange(len(table)), massive))
    far, dist = outliers.outlying_rows(table[rest])
    outlying = [int(rest[i]) for i in far]
    far_by = {int(q): float(d) for q, d in zip(rest, dist, strict=True)}
    left_out = sorted(massive + outlying)
    keep = np.flatnonzero(~np.isin(np.arange(len(table)), left_out))
    rows = [{"position": q, "row_norm": float(norms[q]), "norm_times_median": float(rel[q]),
             "distance_times_median": far_by.get(q, float("nan")),
             "why": "massive norm" if q in massive else "outlying row"} for q in left_out]
    r = Result(metrics={"wpe_rows_left_out": float(len(left_out))},
               tables={"wpe_rows_left_out": rows},
               facts={"n_positions": int(table.shape[0]), "n_dims": int(table.shape[1]),
                      "rows_left_out": left_out, "massive_rows": massive,
                      "outlying_rows": outlying})
    periodic.analyse(r, "wpe", table[keep], keep, p.components)
    return r


def charts(r: Result, view: ChartView) -> dict[str, object]:
    sub = [f"{r.facts['n_positions']:,} positions x {r.facts['n_dims']:,} dimensions"]
    sub.append(outliers.excluded_line(r.facts.get("massive_rows", []), "row",
                                      "listed in the table below"))
    far = r.facts.get("outlying_rows", [])
    if far:
        sub.append(f"row{'s' if len(far) > 1 else ''} {', '.join(map(str, far[:8]))} left out: "
                   f"over {outliers.DISTANCE_FACTOR:g}x the median row's distance from the others")
    return periodic.charts(r, view, "wpe", "Position embedding table", sub)


EMPTY_NOTE = """**No model in this build has a learned position table, so this page is empty.**
What it shows for a model that has one (GPT-2, GPT-Neo, OPT): a PCA of the table itself, one row
per position. The paper's GPT-2 figure on positional embeddings (Ning & Rangaraju,
[arXiv 2511.21594](https://arxiv.org/abs/2511.21594)) shows pairs of principal components
tracing a helix: each component oscillates over position. Here the same would appear as a path
per pair of components coloured by position, each component's score over position with its
dominant frequency, and the claim "learned position components are periodic" checked on it.
Models with rotary (RoPE) or ALiBi positions have no such table: their positions enter inside
attention; the residual stream's own sequence-wise geometry is on the
[sequence-position page](positions.md). To fill this page, add `openai-community/gpt2` to the
suite (it needs the Hugging Face hub or a local copy)."""


EXPERIMENT = Experiment(
    name="pos_embed",
    title="Learned position embeddings",
    doc=__doc__,
    order=50,
    modes=("text",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={"wpe_rows_left_out": "rows of the table left out of the fit: norm above "
                                 f"{outliers.FACTOR:g}x the median row's, or more than "
                                 f"{outliers.DISTANCE_FACTOR:g}x the median row's distance from the "
                                 "coordinate-wise median row",
             **periodic.metric_meanings("wpe", "learned position table")},
    headlines=(Headline("wpe_periodicity", "learned-position periodicity"),),
    claims=(Claim("wpe_periodicity", "position_periodicity_min", 0.5,
                  "learned position components are periodic (power share above {t})"),),
    tables=("wpe_components", "wpe_rows_left_out"),
    paper_figures={"wpe_pairs": "GPT-2 positional embeddings: the learned table's helical structure (PCA component pairs)"},  # noqa: E501
    skip=skip,
    empty_note=EMPTY_NOTE,
)
