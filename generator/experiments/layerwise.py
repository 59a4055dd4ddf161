"""Layerwise evolution: the residual stream drifts through a path as depth grows.

All residual states (initial embedding, after each attention add, after each MLP add, after the
final norm) are projected by one PCA fitted on their unit vectors, shaded light to dark by block.
Variants average over samples (one point per site and position) or over positions (one point per
site and sample). The numbers: variance explained by the top components, and the distance
between the centroids of consecutive blocks (how far each block moves the stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from generator import charts, pca
from generator.experiments import Context, Needs, Output
from generator.points import RESIDUAL_POINTS, Site, all_sites
from generator.reducers import Covariance, MeanState, Reservoir

NAME = "layerwise"
TITLE = "Layerwise evolution of the residual stream"


@dataclass(frozen=True)
class Params:
    skip_first: bool = True
    max_samples: int = 64
    """Samples kept apart for the mean-over-positions variant (memory is fixed by this)."""


def skip_reason(ctx: Context, p: Params) -> str | None:
    return None


def _sites(ctx: Context) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks) if s.point in RESIDUAL_POINTS]


def needs(ctx: Context, p: Params) -> Needs:
    sites, d = _sites(ctx), ctx.d_model
    return {"text": {
        "sample": Reservoir(sites, d, k=ctx.capture.points_per_site * len(sites), seed=ctx.seed,
                            population=ctx.population("text", len(sites))),
        "cov_unit": Covariance(sites, d, unit=True, every=ctx.capture.cov_every,
                               min_position=int(p.skip_first)),
        "by_position": MeanState(sites, d, keep=("site", "position"), seq_len=ctx.seq_len["text"]),
        "by_sample": MeanState(sites, d, keep=("site", "sample"),
                               max_samples=min(p.max_samples, ctx.n_samples["text"])),
    }}


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    r = stats["text"]
    out = Output()
    cov: Covariance = r["cov_unit"]  # type: ignore[assignment]
    fit = pca.from_covariance(cov.state["mean"], cov.covariance(), 10)
    res: Reservoir = r["sample"]  # type: ignore[assignment]
    a = res.arrays()
    point_of = {s.depth: s.point for s in res.sites}
    keep = a["position"] >= int(p.skip_first)
    cap = charts.sample_rows(int(keep.sum()), ctx.capture.max_chart_points)
    x = pca.unit(a["vectors"][keep][cap])
    xy = fit.transform(x)
    df = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1],
                       "point": [point_of[d] for d in a["depth"][keep][cap]],
                       "block": a["block"][keep][cap], "position": a["position"][keep][cap],
                       "token": ctx.token_text(a["token"][keep][cap])})
    evr = fit.explained_variance_ratio
    out.charts["pca_unit"] = charts.titled(
        charts.scatter_by_block(df, "pc1:Q", "pc2:Q", ["point", "block", "position", "token"])
        .properties(width=440, height=440),
        "Residual states of every block, PCA on unit vectors",
        [charts.shown_line(len(df), int(cov.state["n"])),
         f"explained variance {evr[0]:.1%}, {evr[1]:.1%}"])
    for key, label, axis in (("by_position", "averaged over samples", "position"),
                             ("by_sample", "averaged over positions", "sample")):
        ms: MeanState = r[key]  # type: ignore[assignment]
        means, counts = ms.means()
        m = means[:, 0] if axis == "position" else means[:, :, 0]
        c = counts[:, 0] if axis == "position" else counts[:, :, 0]
        if axis == "position":
            m, c = m[:, int(p.skip_first):], c[:, int(p.skip_first):]
        ok = c > 0
        xy = fit.transform(pca.unit(m[ok]))
        grid = np.indices(ok.shape)
        sdf = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1],
                            "point": np.array([s.point for s in ms.sites])[grid[0][ok]],
                            "block": np.array([s.block for s in ms.sites])[grid[0][ok]],
                            axis: grid[1][ok] + (int(p.skip_first) if axis == "position" else 0)})
        shown = charts.spread_rows(len(sdf), ctx.capture.max_chart_points, ctx.seed)
        out.charts[f"pca_{key}"] = charts.titled(
            charts.scatter_by_block(sdf.iloc[shown], "pc1:Q", "pc2:Q", ["point", "block", axis])
            .properties(width=440, height=440), f"Residual states {label}",
            [charts.shown_line(len(shown), len(sdf))])

    ms = r["by_position"]  # type: ignore[assignment]
    st = ms.arrays()
    per_site = st["sum"].reshape(len(ms.sites), -1, ctx.d_model).sum(1)
    n = st["count"].reshape(len(ms.sites), -1).sum(1)
    centroid = per_site / np.maximum(n, 1)[:, None]
    order = [i for i, s in enumerate(ms.sites) if s.point in ("embed", "resid_mlp")]
    rows = []
    for i, j in zip(order[:-1], order[1:], strict=True):
        u, v = centroid[i], centroid[j]
        cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))
        rows.append({"block": ms.sites[j].block, "cosine_distance": 1 - cos,
                     "l2_distance": float(np.linalg.norm(v - u))})
    dist = pd.DataFrame(rows)
    out.charts["centroid_step"] = charts.titled(
        charts.line(dist, "block:Q", "cosine_distance:Q",
                    tooltip=["block", "cosine_distance", "l2_distance"],
                    y_title="cosine distance to previous block's centroid"),
        "How far each block moves the residual centroid", [])
    out.metrics = {
        "evr_pc1": (float(evr[0]), "variance of unit residual states explained by PC1"),
        "evr_pc2": (float(evr[1]), "variance explained by PC2"),
        "evr_top10": (float(evr[:10].sum()), "variance explained by the top 10 components"),
        "centroid_step_mean": (float(dist.cosine_distance.mean()),
                               "mean cosine distance between consecutive block centroids"),
        "centroid_step_max_block": (float(dist.block[dist.cosine_distance.idxmax()]),
                                    "block whose output moves the centroid the most"),
    }
    out.tables["centroid_steps"] = rows
    return out
