"""Sequence-position geometry: the mean residual state at each position traces a curve.

For each position, the residual after the MLP is averaged over samples and over the middle
blocks, then PCA with 6 components is fitted on these per-position means. Outlying positions
are left out first, each listed with the reason: massive-norm positions (position 0, and any
other whose mean norm over the middle blocks is above 4x the median position's; the norms page
reports them), then any position whose mean state lies more than 8x the median position's
distance from the others (the distance to the coordinate-wise median state). One such point
would otherwise be the first component by itself: on SmolLM2, position 1 (norm about 2x the
median, its mean state 16x the median distance out) carried three quarters of PC1's variance.
Pairs of components are drawn as a path through the positions in order, coloured by position,
with the first and last position marked. On GPT-2 the pairs trace a helix; LLaMA-family models
show their own sequence-wise pattern.

The numbers: the variance each component explains, its dominant frequency over position (FFT
of the component's score, gaps left by excluded positions filled by interpolation) with the
share of power at that frequency (what makes a helix a helix), and the largest share of
component 1's variance that any single position carries (near 1/positions when the component is
spread over the sequence). The same analysis is repeated on the per-position means scaled to
unit length ("unit"), which removes how the norm varies with position and keeps only the
direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator.analysis import outliers, periodic
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
    from generator.reducers.norms import NormStats

MIN_SEQ_LEN = 8


@dataclass(frozen=True)
class Params(MiddleParams):
    components: int = 6
    """Principal components fitted on the per-position means."""
    skip_first: bool = True
    """Leave position 0 out even where it is not massive (the paper always does); massive
    positions are left out in any case."""


def skip(ctx: Context, p: Params) -> str | None:
    if ctx.seq_len["text"] < MIN_SEQ_LEN:
        return f"sequences of {ctx.seq_len['text']} tokens are too short for position geometry"
    return None


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.means import MeanState
    from generator.reducers.norms import NormStats

    sites = middle_sites(ctx.n_blocks, p.point, p.middle_fraction)
    return {"text": {"mean": MeanState(sites, ctx.d_model, keep=("position",),
                                       seq_len=ctx.seq_len["text"]),
                     "norms": NormStats(sites, ctx.seq_len["text"])}}


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    ms: MeanState = stats["text"]["mean"]
    ns: NormStats = stats["text"]["norms"]
    means, counts = ms.means()
    m, c = means[0, 0], counts[0, 0]
    st = ns.arrays()
    norms = outliers.pooled_norm_by_position(st["sum_pos"], st["n_pos"])
    rel = outliers.times_median(norms)
    massive = [q for q in outliers.massive_positions(norms) if c[q] > 0]
    first_out = sorted(set(massive) | ({0} if p.skip_first else set()))
    seen = np.flatnonzero(c > 0)
    rest = seen[~np.isin(seen, first_out)]
    # Then the mean states themselves: a position far from the others decides the fit even
    # with an ordinary norm.
    far, dist = outliers.outlying_rows(m[rest])
    outlying = [int(rest[i]) for i in far]
    far_by = {int(q): float(d) for q, d in zip(rest, dist, strict=True)}
    left_out = sorted(set(first_out) | set(outlying))
    positions = np.array([q for q in seen if q not in left_out])
    blocks = sorted({s.block for s in ms.sites})

    def why(q: int) -> str:
        if q in massive:
            return f"massive norm ({rel[q]:,.3g}x the median position's)"
        if q in outlying:
            return (f"outlying mean state ({far_by[q]:,.3g}x the median position's distance "
                    "from the centre)")
        return "position 0 (left out by setting)"

    r = Result(
        metrics={"massive_positions": float(len(massive)),
                 "outlying_positions": float(len(outlying))},
        tables={"excluded_positions": [
            {"position": q, "mean_norm": float(norms[q]), "norm_times_median": float(rel[q]),
             "distance_times_median": far_by.get(q, float("nan")), "why": why(q)}
            for q in left_out]},
        facts={"point": p.point, "middle_blocks": [blocks[0], blocks[-1]],
               "positions": [int(positions[0]), int(positions[-1])],
               "massive_positions": massive, "outlying_positions": outlying,
               "left_out": left_out, "factor": outliers.FACTOR,
               "distance_factor": outliers.DISTANCE_FACTOR})
    periodic.analyse(r, "raw", m[positions], positions, p.components)
    periodic.analyse(r, "unit", unit(m[positions]), positions, p.components)
    return r


def charts(r: Result, view: ChartView) -> dict[str, object]:
    def excluded_words(facts: dict) -> str:
        """What was left out of the fit, for the subtitle."""
        massive, left_out = facts.get("massive_positions", []), facts.get("left_out", [])
        outlying = facts.get("outlying_positions", [])
        words = [outliers.excluded_line(massive)]
        if outlying:
            shown = ", ".join(str(q) for q in outlying[:8]) + (" ..." if len(outlying) > 8 else "")
            factor = facts.get("distance_factor", outliers.DISTANCE_FACTOR)
            words.append(f"position{'s' if len(outlying) > 1 else ''} {shown} left out: mean state "
                         f"over {factor:g}x the median distance from the others")
        if 0 in left_out and 0 not in massive and 0 not in outlying:
            words.append("position 0 left out (as in the paper)")
        return "; ".join(w for w in words if w) or "no position left out"

    first, last = r.facts["middle_blocks"]
    p0, p1 = r.facts["positions"]
    sub = [f"mean of {r.facts['point']} over samples and blocks {first}-{last}, "
           f"positions {p0}-{p1}", excluded_words(r.facts)]
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
    metrics={"massive_positions": "positions left out of the fit because their mean norm over "
                                  f"the middle blocks is above {outliers.FACTOR:g}x the median "
                                  "position's",
             "outlying_positions": "other positions left out because their mean state is more "
                                   f"than {outliers.DISTANCE_FACTOR:g}x the median position's "
                                   "distance from the coordinate-wise median state",
             **periodic.metric_meanings("raw", "per-position mean residual"),
             **periodic.metric_meanings("unit", "per-position mean residual scaled to unit "
                                                "length")},
    headlines=(Headline("raw_evr_pc1", "position PC1 variance"),
               Headline("raw_cycles_pc1", "position PC1 cycles"),
               Headline("raw_periodicity", "position periodicity")),
    claims=(Claim("raw_periodicity", "position_periodicity_min", 0.5,
                  "residual position components are periodic (power share above {t})"),),
    tables=("excluded_positions", "raw_components", "unit_components"),
    paper_figures={"raw_pairs": "Sequence position: pairs of 6 PCA components of the middle-block residual, coloured by position (raw, position 0 excluded)", "unit_pairs": "Sequence position: the same on unit vectors"},  # noqa: E501
    skip=skip,
)
