"""Learned position embeddings: GPT-2's `wpe` table has a high-dimensional helical structure.

PCA of the table (one row per position); pairs of components colored by position, and each
component's dominant frequency over position. Rotary models (LLaMA family) have no learned table:
their positions enter by rotating queries and keys inside attention, so there is nothing to plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.analysis import periodic
from generator.experiment import ChartView, Claim, Context, Experiment, Headline, Needs, Result


@dataclass(frozen=True)
class Params:
    components: int = 6
    """Principal components fitted on the table's rows."""
    max_positions: int = 0
    """Use the first N rows of the table; 0 means all."""


def skip(ctx: Context, p: Params) -> str | None:
    if ctx.architecture.pos_embed is None:
        return (f"{ctx.model_name} uses rotary position embeddings (RoPE): there is no learned "
                "position table to analyse")
    return None


def needs(ctx: Context, p: Params) -> Needs:
    return {}  # reads the model's weights, not its states


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    weight = ctx.architecture.position_table(ctx.model)
    table = weight.detach().float().cpu().numpy().astype(np.float64)
    if p.max_positions:
        table = table[: p.max_positions]
    r = Result(facts={"n_positions": int(table.shape[0]), "n_dims": int(table.shape[1])})
    periodic.analyse(r, "wpe", table, np.arange(len(table)), p.components)
    return r


def charts(r: Result, view: ChartView) -> dict[str, object]:
    sub = [f"{r.facts['n_positions']} positions x {r.facts['n_dims']} dimensions"]
    return periodic.charts(r, view, "wpe", "Position embedding table", sub)


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
    metrics=periodic.metric_meanings("wpe", "learned position table"),
    headlines=(Headline("wpe_periodicity", "learned-position periodicity"),),
    claims=(Claim("wpe_periodicity", "position_periodicity_min", 0.5,
                  "learned position components are periodic (power share above {t})"),),
    tables=("wpe_components",),
    skip=skip,
)
