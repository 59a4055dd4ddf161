"""Norms: how large the state is at each capture point across depth, and at each sequence position.

The first chart shows the mean L2 norm of every capture point across the blocks (log scale):
residual states grow with depth while norm outputs stay near the norm's scale. The second shows
the mean norm of the residual stream per sequence position, averaged over the middle blocks:
position 0 stands far above the rest, the paper's "huge norm at position 0". The number is the
ratio of the position-0 norm to the median norm of the other positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from generator import charts
from generator.experiments import Context, Needs, Output
from generator.points import ALL_POINTS, all_sites, middle_blocks
from generator.reducers import NormStats

NAME = "norms"
TITLE = "Norms across depth and position"
MODES = ("text",)


@dataclass(frozen=True)
class Params:
    middle_fraction: float = 0.6
    """Share of depth, centered, that counts as the middle blocks."""
    point: str = "resid_mlp"
    """Capture point whose per-position norm is reported."""


def skip_reason(ctx: Context, p: Params) -> str | None:
    return None


def needs(ctx: Context, p: Params) -> Needs:
    return {"text": {"norms": NormStats(all_sites(ctx.n_blocks), ctx.seq_len["text"])}}


def pos0_ratio(mean_pos: np.ndarray) -> float:
    rest = mean_pos[1:][np.isfinite(mean_pos[1:]) & (mean_pos[1:] > 0)]
    return float(mean_pos[0] / np.median(rest)) if len(rest) else float("nan")


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    ns: NormStats = stats["text"]["norms"]  # type: ignore[assignment]
    st, var = ns.state, ns.variance()
    rows = [{"point": s.point, "block": s.block, "depth": s.depth, "mean_norm": st["mean"][i],
             "std_norm": float(np.sqrt(var[i])), "tokens": int(st["n"][i])}
            for i, s in enumerate(ns.sites)]
    depth_df = pd.DataFrame(rows)
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    idx = [ns.index[(p.point, b)] for b in mids]
    n_pos, mean_pos = st["n_pos"][idx], st["mean_pos"][idx]
    pooled = (n_pos * mean_pos).sum(0) / np.maximum(n_pos.sum(0), 1)
    pos_df = pd.DataFrame({"position": np.arange(len(pooled)), "mean_norm": pooled})
    per_block = [{"block": b, "pos0_norm": float(st["mean_pos"][ns.index[(p.point, b)]][0]),
                  "median_other_norm": float(np.median(st["mean_pos"][ns.index[(p.point, b)]][1:])),
                  "ratio": pos0_ratio(st["mean_pos"][ns.index[(p.point, b)]])}
                 for b in range(ctx.n_blocks)]
    ratio = pos0_ratio(pooled)
    mid_ratios = [r["ratio"] for r in per_block if r["block"] in mids]
    out = Output()
    out.charts["norm_by_depth"] = charts.titled(
        charts.line(depth_df[depth_df.point.isin(ALL_POINTS)], "depth:Q", "mean_norm:Q",
                    color="point", log_y=True, tooltip=["point", "block", "mean_norm", "tokens"],
                    x_title="depth (capture points in forward order)", y_title="mean L2 norm"),
        "Mean norm of every capture point across depth", [])
    out.charts["norm_by_position"] = charts.titled(
        charts.line(pos_df, "position:Q", "mean_norm:Q", log_y=True,
                    y_title=f"mean L2 norm of {p.point}"),
        f"Norm per sequence position, middle blocks {mids[0]}-{mids[-1]}",
        [f"position 0 is {ratio:.1f}x the median of the other positions"])
    pb = pd.DataFrame(per_block)
    out.charts["pos0_ratio_by_block"] = charts.titled(
        charts.line(pb, "block:Q", "ratio:Q", log_y=True, y_title="position-0 norm / median"),
        "Position-0 norm ratio per block", [])
    out.metrics = {
        "pos0_norm_ratio": (ratio, f"position-0 mean norm of {p.point} over the median of the "
                            "other positions, middle blocks pooled"),
        "pos0_norm_ratio_min_middle": (float(np.min(mid_ratios)),
                                       "smallest per-block position-0 ratio in the middle blocks"),
        "final_over_embed_norm": (float(depth_df.iloc[-1].mean_norm / depth_df.iloc[0].mean_norm),
                                  "mean norm after the final norm over the initial embedding"),
        "max_resid_norm": (float(depth_df[depth_df.point == "resid_mlp"].mean_norm.max()),
                           "largest mean residual norm over blocks"),
    }
    out.tables["norm_by_site"] = rows
    out.tables["pos0_ratio_by_block"] = per_block
    return out
