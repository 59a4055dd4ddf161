"""Learned position embeddings: GPT-2's `wpe` table has a high-dimensional helical structure.

PCA of the table (one row per position); pairs of components colored by position, and each
component's dominant frequency over position. Rotary models (LLaMA family) have no learned table:
their positions enter by rotating queries and keys inside attention, so there is nothing to plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.experiments import Context, Needs, Output, periodic

NAME = "pos_embed"
TITLE = "Learned position embeddings"


@dataclass(frozen=True)
class Params:
    components: int = 6
    max_positions: int = 0
    """Use the first N rows of the table; 0 means all."""


def skip_reason(ctx: Context, p: Params) -> str | None:
    if ctx.adapter.pos_embed is None:
        return (f"{ctx.model_name} uses rotary position embeddings (RoPE): there is no learned "
                "position table to analyse")
    return None


def needs(ctx: Context, p: Params) -> Needs:
    return {}


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    table = ctx.adapter.position_table(ctx.model).detach().float().cpu().numpy().astype(np.float64)
    if p.max_positions:
        table = table[: p.max_positions]
    out = Output()
    periodic.analyse(table, np.arange(len(table)), p.components, "Position embedding table",
                     out, "wpe", [f"{len(table)} positions x {table.shape[1]} dimensions"],
                     ctx.capture.max_chart_points, ctx.seed)
    return out
