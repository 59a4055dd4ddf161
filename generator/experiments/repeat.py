"""Repeated tokens: one token repeated over the whole sequence, compared with ordinary text.

For each repeated token, the mean middle-block residual norm at each position, next to the same
curve on text, and the trajectory of the middle-block residual over positions projected by PCA.
With nothing new to read, the state settles: the trajectory contracts after the first few
positions. The numbers: repeated-sequence norm relative to text, and how similar the last
positions' states are (cosine), per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from generator import charts, pca
from generator.experiments import Context, Needs, Output
from generator.points import Site, all_sites, middle_blocks
from generator.reducers import MeanState, SampleNorms

NAME = "repeat"
TITLE = "Repeated-token sequences"


@dataclass(frozen=True)
class Params:
    point: str = "resid_mlp"
    middle_fraction: float = 0.6


def skip_reason(ctx: Context, p: Params) -> str | None:
    return None


def _sites(ctx: Context, p: Params) -> list[Site]:
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    return [s for s in all_sites(ctx.n_blocks) if s.point == p.point and s.block in mids]


def needs(ctx: Context, p: Params) -> Needs:
    sites = _sites(ctx, p)
    n, t = ctx.n_samples["repeat"], ctx.seq_len["repeat"]
    return {
        "repeat": {"norms": SampleNorms(sites, n, t),
                   "mean": MeanState(sites, ctx.d_model, keep=("sample", "position"), seq_len=t,
                                     max_samples=n)},
        "text": {"norms": SampleNorms(sites, ctx.n_samples["text"], ctx.seq_len["text"])},
    }


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    labels = ctx.input_labels["repeat"]
    rep = stats["repeat"]["norms"].means()  # type: ignore[attr-defined]
    text = np.nanmean(stats["text"]["norms"].means(), axis=0)  # type: ignore[attr-defined]
    t = min(rep.shape[1], len(text))
    rows = [{"sequence": f"repeat {lab!r}", "position": i, "mean_norm": float(rep[s, i])}
            for s, lab in enumerate(labels) for i in range(rep.shape[1])]
    rows += [{"sequence": "text", "position": i, "mean_norm": float(text[i])} for i in range(t)]
    out = Output()
    out.charts["norm_by_position"] = charts.titled(
        charts.line(pd.DataFrame(rows), "position:Q", "mean_norm:Q", color="sequence", log_y=True,
                    tooltip=["sequence", "position", "mean_norm"],
                    y_title=f"mean norm of {p.point}, middle blocks"),
        "Norm per position: repeated tokens vs text", [])
    ms: MeanState = stats["repeat"]["mean"]  # type: ignore[assignment]
    means, _ = ms.means()
    traj = means[0, :, 1:, :]  # (token, position >= 1, D): position 0 would dominate
    flat = pca.unit(traj.reshape(-1, traj.shape[-1]))
    fit = pca.fit(flat, 2)
    xy = fit.transform(flat).reshape(traj.shape[0], traj.shape[1], 2)
    tdf = pd.DataFrame([{"sequence": repr(lab), "position": i + 1, "pc1": xy[s, i, 0],
                         "pc2": xy[s, i, 1]} for s, lab in enumerate(labels)
                        for i in range(traj.shape[1])])
    out.charts["trajectory"] = charts.titled(
        charts.line(tdf, "pc1:Q", "pc2:Q", color="sequence",
                    tooltip=["sequence", "position", "pc1", "pc2"]).encode(order="position:Q"),
        "Trajectory of the middle-block residual over positions (PCA, unit vectors)",
        ["one line per repeated token, positions 1 onward"])
    table, ratios, settles = [], [], []
    for s, lab in enumerate(labels):
        u = pca.unit(traj[s])
        settle = float(u[-1] @ u[len(u) // 2])
        ratio = float(np.nanmean(rep[s, 1:t]) / np.nanmean(text[1:t]))
        table.append({"token": lab, "norm_vs_text": ratio, "late_cosine": settle,
                      "pos0_norm": float(rep[s, 0])})
        ratios.append(ratio)
        settles.append(settle)
    out.metrics = {
        "repeat_norm_over_text": (float(np.mean(ratios)), "mean norm (positions >= 1) of repeated-"
                                  "token sequences over that of text, averaged over tokens"),
        "repeat_late_cosine": (float(np.mean(settles)), "cosine between the state at the middle "
                               "and the last position of a repeated sequence (1 = settled)"),
    }
    out.tables["repeat_tokens"] = table
    return out
