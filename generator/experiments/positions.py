"""Sequence-position geometry: the mean residual state at each position traces a curve.

For each position, the residual after the MLP is averaged over samples and over the middle
blocks, then PCA with 6 components is fitted on these per-position means (position 0 left out,
its norm would dominate). Pairs of components are drawn colored by position. On GPT-2 the pairs
trace a helix; LLaMA-family models show their own smooth sequence-wise pattern. The numbers: the
variance each component explains and its dominant frequency over position (FFT), with the share
of power at that frequency, which is what makes a helix a helix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.experiments import Context, Needs, Output, periodic
from generator.points import Site, all_sites, middle_blocks
from generator.reducers import MeanState

NAME = "positions"
TITLE = "Sequence-position geometry"


@dataclass(frozen=True)
class Params:
    components: int = 6
    point: str = "resid_mlp"
    middle_fraction: float = 0.6
    skip_first: bool = True


def skip_reason(ctx: Context, p: Params) -> str | None:
    if ctx.seq_len["text"] < 8:
        return f"sequences of {ctx.seq_len['text']} tokens are too short for position geometry"
    return None


def _sites(ctx: Context, p: Params) -> list[Site]:
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    return [s for s in all_sites(ctx.n_blocks) if s.point == p.point and s.block in mids]


def needs(ctx: Context, p: Params) -> Needs:
    return {"text": {"mean": MeanState(_sites(ctx, p), ctx.d_model, keep=("position",),
                                       seq_len=ctx.seq_len["text"])}}


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    ms: MeanState = stats["text"]["mean"]  # type: ignore[assignment]
    means, counts = ms.means()
    first = int(p.skip_first)
    m, c = means[0, 0, first:], counts[0, 0, first:]
    ok = c > 0
    positions = np.arange(first, first + len(c))[ok]
    out = Output()
    blocks = sorted({s.block for s in ms.sites})
    sub = [f"mean of {p.point} over samples and blocks {blocks[0]}-{blocks[-1]}, "
           f"positions {positions[0]}-{positions[-1]}"]
    periodic.analyse(m[ok], positions, p.components, "Mean residual per position", out,
                     "raw", sub, ctx.capture.max_chart_points, ctx.seed)
    periodic.analyse(m[ok] / np.linalg.norm(m[ok], axis=1, keepdims=True), positions,
                     p.components, "Unit mean residual per position", out, "unit", sub,
                     ctx.capture.max_chart_points, ctx.seed)
    return out
