"""Repeated tokens: one token repeated over the whole sequence, compared with ordinary text.

For each repeated token, the mean middle-block residual norm at each position, next to the same
curve on text, and the trajectory of the middle-block residual over positions projected by PCA.
With nothing new to read, the state settles: the trajectory contracts after the first few
positions. The numbers: repeated-sequence norm relative to text, and how similar the last
positions' states are (cosine), per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.analysis import pca
from generator.capture.sites import middle_blocks, middle_sites
from generator.experiment import ChartView, Context, Experiment, MiddleParams, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.means import MeanState
    from generator.reducers.sample_norms import SampleNorms


@dataclass(frozen=True)
class Params(MiddleParams):
    """Only the shared middle-block parameters: the point read and the middle share of depth."""


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.means import MeanState
    from generator.reducers.sample_norms import SampleNorms

    sites = middle_sites(ctx.n_blocks, p.point, p.middle_fraction)
    n, t = ctx.n_samples["repeat"], ctx.seq_len["repeat"]
    return {
        "repeat": {"norms": SampleNorms(sites, n, t),
                   "mean": MeanState(sites, ctx.d_model, keep=("sample", "position"), seq_len=t,
                                     max_samples=n)},
        "text": {"norms": SampleNorms(sites, ctx.n_samples["text"], ctx.seq_len["text"])},
    }


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    labels = ctx.input_labels["repeat"]
    rep_norms: SampleNorms = stats["repeat"]["norms"]
    text_norms: SampleNorms = stats["text"]["norms"]
    rep = rep_norms.means()  # (sequence, position)
    text = np.nanmean(text_norms.means(), axis=0)  # (position,): mean over text windows
    t = min(rep.shape[1], len(text))
    rows = [{"sequence": f"repeat {lab!r}", "position": i, "mean_norm": float(rep[s, i])}
            for s, lab in enumerate(labels) for i in range(rep.shape[1])]
    rows += [{"sequence": "text", "position": i, "mean_norm": float(text[i])} for i in range(t)]

    ms: MeanState = stats["repeat"]["mean"]
    means, _ = ms.means()
    traj = means[0, :, 1:, :]  # (sequence, position >= 1, D): position 0 would dominate
    flat = pca.unit(traj.reshape(-1, traj.shape[-1]))
    fit = pca.fit(flat, 2)
    xy = fit.transform(flat).reshape(traj.shape[0], traj.shape[1], 2)
    trajectory = [{"sequence": repr(lab), "position": i + 1, "pc1": float(xy[s, i, 0]),
                   "pc2": float(xy[s, i, 1])}
                  for s, lab in enumerate(labels) for i in range(traj.shape[1])]

    table, ratios, settles = [], [], []
    for s, lab in enumerate(labels):
        u = pca.unit(traj[s])
        settle = float(u[-1] @ u[len(u) // 2])
        ratio = float(np.nanmean(rep[s, 1:t]) / np.nanmean(text[1:t]))
        table.append({"token": lab, "norm_vs_text": ratio, "late_cosine": settle,
                      "pos0_norm": float(rep[s, 0])})
        ratios.append(ratio)
        settles.append(settle)
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    return Result(
        metrics={"repeat_norm_over_text": float(np.mean(ratios)),
                 "repeat_late_cosine": float(np.mean(settles))},
        tables={"repeat_tokens": table, "norm_by_position": rows, "trajectory": trajectory},
        facts={"point": p.point, "middle_blocks": [mids[0], mids[-1]],
               "explained_variance_ratio": [float(v) for v in fit.explained_variance_ratio]})


def charts(r: Result, view: ChartView) -> dict[str, object]:
    first, last = r.facts["middle_blocks"]
    return {
        "norm_by_position": ch.titled(
            ch.line(r.frame("norm_by_position"), "position:Q", "mean_norm:Q", color="sequence",
                    log_y=True, tooltip=["sequence", "position", "mean_norm"],
                    y_title=f"mean norm of {r.facts['point']}, middle blocks {first}-{last}"),
            "Norm per position: repeated tokens vs text", []),
        "trajectory": ch.titled(
            ch.line(r.frame("trajectory"), "pc1:Q", "pc2:Q", color="sequence",
                    tooltip=["sequence", "position", "pc1", "pc2"]).encode(order="position:Q"),
            "Trajectory of the middle-block residual over positions (PCA, unit vectors)",
            ["one line per repeated token, positions 1 onward"]),
    }


EXPERIMENT = Experiment(
    name="repeat",
    title="Repeated-token sequences",
    doc=__doc__,
    order=60,
    modes=("repeat", "text"),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "repeat_norm_over_text": "mean norm (positions >= 1) of repeated-token sequences over "
                                 "that of text, averaged over tokens",
        "repeat_late_cosine": "cosine between the state at the middle and the last position of "
                              "a repeated sequence (1 = settled)",
    },
    tables=("repeat_tokens",),
)
