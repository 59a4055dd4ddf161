"""Sequence-position geometry: the mean residual state at each position traces a curve.

For each position, the residual after the MLP is averaged over samples and over the middle
blocks, then PCA with 6 components is fitted on these per-position means (position 0 left out,
its norm would dominate). Pairs of components are drawn colored by position. On GPT-2 the pairs
trace a helix; LLaMA-family models show their own smooth sequence-wise pattern. The numbers: the
variance each component explains and its dominant frequency over position (FFT), with the share
of power at that frequency, which is what makes a helix a helix. The same analysis is repeated on
the per-position means scaled to unit length ("unit"), which removes how the norm varies with
position and keeps only the direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator.analysis import periodic
from generator.analysis.pca import unit
from generator.capture.sites import middle_sites
from generator.experiment import (
    ChartView,
    Claim,
    Context,
    Experiment,
    Headline,
    MiddleParams,
    Needs,
    Result,
)

if TYPE_CHECKING:
    from generator.reducers.means import MeanState

MIN_SEQ_LEN = 8


@dataclass(frozen=True)
class Params(MiddleParams):
    components: int = 6
    """Principal components fitted on the per-position means."""
    skip_first: bool = True
    """Leave position 0 out (its norm would dominate the fit)."""


def skip(ctx: Context, p: Params) -> str | None:
    if ctx.seq_len["text"] < MIN_SEQ_LEN:
        return f"sequences of {ctx.seq_len['text']} tokens are too short for position geometry"
    return None


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.means import MeanState

    return {"text": {"mean": MeanState(middle_sites(ctx.n_blocks, p.point, p.middle_fraction),
                                       ctx.d_model, keep=("position",),
                                       seq_len=ctx.seq_len["text"])}}


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    ms: MeanState = stats["text"]["mean"]
    means, counts = ms.means()
    first = int(p.skip_first)
    m, c = means[0, 0, first:], counts[0, 0, first:]
    ok = c > 0
    positions = np.arange(first, first + len(c))[ok]
    blocks = sorted({s.block for s in ms.sites})
    r = Result(facts={"point": p.point, "middle_blocks": [blocks[0], blocks[-1]],
                      "positions": [int(positions[0]), int(positions[-1])]})
    periodic.analyse(r, "raw", m[ok], positions, p.components)
    periodic.analyse(r, "unit", unit(m[ok]), positions, p.components)
    return r


def charts(r: Result, view: ChartView) -> dict[str, object]:
    first, last = r.facts["middle_blocks"]
    p0, p1 = r.facts["positions"]
    sub = [f"mean of {r.facts['point']} over samples and blocks {first}-{last}, "
           f"positions {p0}-{p1}"]
    return {**periodic.charts(r, view, "raw", "Mean residual per position", sub),
            **periodic.charts(r, view, "unit", "Unit mean residual per position", sub)}


EXPERIMENT = Experiment(
    name="positions",
    title="Sequence-position geometry",
    doc=__doc__,
    order=40,
    modes=("text",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={**periodic.metric_meanings("raw", "per-position mean residual"),
             **periodic.metric_meanings("unit", "per-position mean residual scaled to unit "
                                                "length")},
    headlines=(Headline("raw_evr_pc1", "position PC1 variance"),
               Headline("raw_cycles_pc1", "position PC1 cycles"),
               Headline("raw_periodicity", "position periodicity")),
    claims=(Claim("raw_periodicity", "position_periodicity_min", 0.5,
                  "residual position components are periodic (power share above {t})"),),
    tables=("raw_components", "unit_components"),
    skip=skip,
)
