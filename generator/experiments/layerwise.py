"""Layerwise evolution: the residual stream drifts through a path as depth grows.

All residual states (initial embedding, after each attention add, after each MLP add, after the
final norm) are projected by one PCA fitted on their unit vectors, shaded light to dark by block.
Variants average over samples (one point per site and position) or over positions (one point per
site and sample). The numbers: variance explained by the top components, and the distance
between the centroids of consecutive blocks (how far each block moves the stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.analysis import frames, pca
from generator.capture.sites import RESIDUAL_POINTS, Site, all_sites
from generator.experiment import ChartView, Context, Experiment, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState


@dataclass(frozen=True)
class Params:
    skip_first: bool = True
    max_samples: int = 64
    """Samples kept apart for the mean-over-positions variant (memory is fixed by this)."""


def _sites(ctx: Context) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks) if s.point in RESIDUAL_POINTS]


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir

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


VARIANTS = (("by_position", "averaged over samples", "position"),
            ("by_sample", "averaged over positions", "sample"))


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    r = stats["text"]
    first = int(p.skip_first)
    cov: Covariance = r["cov_unit"]
    fit = pca.from_covariance(cov.state["mean"], cov.covariance(), 10)
    x, lab = frames.reservoir(r["sample"], min_position=first, decode=ctx.token_text)
    tables: dict[str, list[dict]] = {
        "pca_unit": frames.rows(lab, fit.transform(pca.unit(x)),
                                columns=["point", "block", "position", "token"])}
    for key, _, axis in VARIANTS:
        m, mlab = frames.mean_states(r[key], min_position=first)
        tables[f"pca_{key}"] = frames.rows(mlab, fit.transform(pca.unit(m)),
                                           columns=["point", "block", axis])

    ms: MeanState = r["by_position"]
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
    tables["centroid_steps"] = rows
    steps = np.array([row["cosine_distance"] for row in rows])
    evr = fit.explained_variance_ratio
    return Result(
        metrics={
            "evr_pc1": float(evr[0]),
            "evr_pc2": float(evr[1]),
            "evr_top10": float(evr[:10].sum()),
            "centroid_step_mean": float(np.nanmean(steps)),
            "centroid_step_max_block": float(rows[int(np.nanargmax(steps))]["block"]),
        },
        tables=tables,
        facts={"evr": [float(evr[0]), float(evr[1])], "total_tokens": int(cov.state["n"])})


def charts(r: Result, view: ChartView) -> dict[str, object]:
    e1, e2 = r.facts["evr"]
    df = r.frame("pca_unit")
    shown = df.iloc[ch.sample_rows(len(df), view.max_chart_points)]
    out: dict[str, object] = {"pca_unit": ch.titled(
        ch.scatter_by_block(shown, "pc1:Q", "pc2:Q", ["point", "block", "position", "token"])
        .properties(width=440, height=440),
        "Residual states of every block, PCA on unit vectors",
        [ch.shown_line(len(shown), r.facts["total_tokens"]),
         f"explained variance {e1:.1%}, {e2:.1%}"])}
    for key, label, axis in VARIANTS:
        sdf = r.frame(f"pca_{key}")
        keep = ch.spread_rows(len(sdf), view.max_chart_points, view.seed)
        out[f"pca_{key}"] = ch.titled(
            ch.scatter_by_block(sdf.iloc[keep], "pc1:Q", "pc2:Q", ["point", "block", axis])
            .properties(width=440, height=440), f"Residual states {label}",
            [ch.shown_line(len(keep), len(sdf))])
    out["centroid_step"] = ch.titled(
        ch.line(r.frame("centroid_steps"), "block:Q", "cosine_distance:Q",
                tooltip=["block", "cosine_distance", "l2_distance"],
                y_title="cosine distance to previous block's centroid"),
        "How far each block moves the residual centroid", [])
    return out


EXPERIMENT = Experiment(
    name="layerwise",
    title="Layerwise evolution of the residual stream",
    doc=__doc__,
    order=30,
    modes=("text",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "evr_pc1": "variance of unit residual states explained by PC1",
        "evr_pc2": "variance explained by PC2",
        "evr_top10": "variance explained by the top 10 components",
        "centroid_step_mean": "mean cosine distance between consecutive block centroids",
        "centroid_step_max_block": "block whose output moves the centroid the most",
    },
    tables=("centroid_steps",),
)
