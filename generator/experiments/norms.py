"""Norms: how large the state is at each capture point across depth, and at each sequence position.

The first chart shows the mean L2 norm of every capture point across the blocks (log scale):
residual states grow with depth while norm outputs stay near the norm's scale. The second shows
the mean norm of the residual stream per sequence position, averaged over the middle blocks:
position 0 stands far above the rest, the paper's "huge norm at position 0". The number is the
ratio of the position-0 norm to the median norm of the other positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.capture.sites import ALL_POINTS, all_sites, middle_blocks
from generator.experiment import ChartView, Claim, Context, Experiment, Headline, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.norms import NormStats


@dataclass(frozen=True)
class Params:
    middle_fraction: float = 0.6
    """Share of depth, centered, that counts as the middle blocks."""
    point: str = "resid_mlp"
    """Capture point whose per-position norm is reported."""


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.norms import NormStats

    return {"text": {"norms": NormStats(all_sites(ctx.n_blocks), ctx.seq_len["text"])}}


def pos0_ratio(mean_pos: np.ndarray) -> float:
    """Position-0 norm over the median of the other positions (NaN when there are none)."""
    rest = mean_pos[1:][np.isfinite(mean_pos[1:]) & (mean_pos[1:] > 0)]
    return float(mean_pos[0] / np.median(rest)) if len(rest) else float("nan")


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    ns: NormStats = stats["text"]["norms"]
    st, var, mean_pos = ns.arrays(), ns.variance(), ns.mean_pos()
    by_site = [{"point": s.point, "block": s.block, "depth": s.depth, "mean_norm": st["mean"][i],
                "std_norm": float(np.sqrt(var[i])), "tokens": int(st["n"][i])}
               for i, s in enumerate(ns.sites)]
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    idx = [ns.index[(p.point, b)] for b in mids]
    n_pos = st["n_pos"][idx]
    pooled = np.nansum(n_pos * mean_pos[idx], 0) / np.maximum(n_pos.sum(0), 1)
    per_block = []
    for b in range(ctx.n_blocks):
        row = mean_pos[ns.index[(p.point, b)]]
        per_block.append({"block": b, "pos0_norm": float(row[0]),
                          "median_other_norm": float(np.nanmedian(row[1:])),
                          "ratio": pos0_ratio(row)})
    ratio = pos0_ratio(pooled)
    mid_ratios = [r["ratio"] for r in per_block if r["block"] in mids]
    resid = [r["mean_norm"] for r in by_site if r["point"] == "resid_mlp"]
    return Result(
        metrics={"pos0_norm_ratio": ratio,
                 "pos0_norm_ratio_min_middle": float(np.min(mid_ratios)),
                 "final_over_embed_norm": float(by_site[-1]["mean_norm"] / by_site[0]["mean_norm"]),
                 "max_resid_norm": float(np.max(resid))},
        tables={"norm_by_site": by_site, "pos0_ratio_by_block": per_block,
                "norm_by_position": [{"position": i, "mean_norm": float(v)}
                                     for i, v in enumerate(pooled)]},
        facts={"middle_blocks": [mids[0], mids[-1]], "point": p.point})


def charts(r: Result, view: ChartView) -> dict[str, object]:
    depth = r.frame("norm_by_site")
    first, last = r.facts["middle_blocks"]
    ratio = r.metrics["pos0_norm_ratio"]
    return {
        "norm_by_depth": ch.titled(
            ch.line(depth[depth.point.isin(ALL_POINTS)], "depth:Q", "mean_norm:Q", color="point",
                    log_y=True, tooltip=["point", "block", "mean_norm", "tokens"],
                    x_title="depth (capture points in forward order)", y_title="mean L2 norm"),
            "Mean norm of every capture point across depth", []),
        "norm_by_position": ch.titled(
            ch.line(r.frame("norm_by_position"), "position:Q", "mean_norm:Q", log_y=True,
                    x_title="sequence position", y_title=f"mean L2 norm of {r.facts['point']}"),
            f"Norm per sequence position, middle blocks {first}-{last}",
            [f"position 0 is {ratio:.1f}x the median of the other positions"]),
        "pos0_ratio_by_block": ch.titled(
            ch.line(r.frame("pos0_ratio_by_block"), "block:Q", "ratio:Q", log_y=True,
                    x_title="block", y_title="position-0 norm / median"),
            "Position-0 norm ratio per block", []),
    }


EXPERIMENT = Experiment(
    name="norms",
    title="Norms across depth and position",
    doc=__doc__,
    order=10,
    modes=("text",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "pos0_norm_ratio": "position-0 mean norm of the chosen point over the median of the "
                           "other positions, middle blocks pooled",
        "pos0_norm_ratio_min_middle": "smallest per-block position-0 ratio in the middle blocks",
        "final_over_embed_norm": "mean norm after the final norm over the initial embedding",
        "max_resid_norm": "largest mean residual norm over blocks",
    },
    headlines=(Headline("pos0_norm_ratio", "position-0 norm ratio"),),
    claims=(Claim("pos0_norm_ratio", "pos0_norm_ratio_min", 10.0,
                  "position 0 norm is at least {t}x the median position in middle blocks"),),
    tables=("norm_by_site", "pos0_ratio_by_block"),
)
