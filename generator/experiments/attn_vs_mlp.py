"""Attention vs MLP outputs: in the middle blocks the two components write in separable directions.

The component outputs (before they are added to the residual) of the middle blocks are projected
to 2-D by PCA, raw and as unit vectors, and by UMAP (cosine). Blue shades are attention, orange
shades MLP, light to dark by block. Position 0 is left out, as in the paper, because its
outputs are orders of magnitude larger. The numbers: per block, the held-out accuracy of a
logistic regression telling attention from MLP unit vectors (0.5 is chance), the silhouette of
the two groups, and UMAP's trustworthiness (how faithfully the 2-D picture keeps neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from generator import charts, pca
from generator.experiments import Context, Needs, Output
from generator.points import COMPONENT_POINTS, Site, all_sites, middle_blocks
from generator.reducers import Covariance, MeanState, Reservoir

NAME = "attn_vs_mlp"
TITLE = "Attention vs MLP outputs"


@dataclass(frozen=True)
class Params:
    blocks: list[int] | None = None
    """[first, last] middle blocks (inclusive); default: the middle 60% of depth."""
    umap_points: int = 2000
    umap_neighbors: int = 15
    test_fraction: float = 0.3
    skip_first: bool = True
    """Leave position 0 out, as the paper does."""


def skip_reason(ctx: Context, p: Params) -> str | None:
    return None


def mids(ctx: Context, p: Params) -> list[int]:
    if p.blocks:
        return list(range(p.blocks[0], min(p.blocks[-1], ctx.n_blocks - 1) + 1))
    return middle_blocks(ctx.n_blocks)


def _sites(ctx: Context, blocks: list[int]) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks) if s.point in COMPONENT_POINTS and s.block in blocks]


def needs(ctx: Context, p: Params) -> Needs:
    every = list(range(ctx.n_blocks))
    middle = _sites(ctx, mids(ctx, p))
    k = ctx.capture.points_per_site * 2 * ctx.n_blocks
    first = int(p.skip_first)
    d = ctx.d_model
    return {"text": {
        "sample": Reservoir(_sites(ctx, every), d, k=k, seed=ctx.seed,
                            population=ctx.population("text", 2 * ctx.n_blocks)),
        "cov_raw": Covariance(middle, d, every=ctx.capture.cov_every, min_position=first,
                              keep_above=ctx.capture.cov_keep_above),
        "cov_unit": Covariance(middle, d, unit=True, every=ctx.capture.cov_every,
                               min_position=first),
        "mean": MeanState(middle, d, keep=("site", "position"), seq_len=ctx.seq_len["text"]),
    }}


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import train_test_split

    r = stats["text"]
    res: Reservoir = r["sample"]  # type: ignore[assignment]
    a = res.arrays()
    point_of = {s.depth: s.point for s in res.sites}
    keep = a["position"] >= int(p.skip_first)
    x, kind = a["vectors"][keep], np.array([point_of[d] for d in a["depth"][keep]])
    block, pos, tok = a["block"][keep], a["position"][keep], a["token"][keep]
    blocks = mids(ctx, p)
    out = Output()

    per_block = []
    for b in range(ctx.n_blocks):
        sel = block == b
        xb, yb = pca.unit(x[sel]), (kind[sel] == "mlp").astype(int)
        if len(set(yb)) < 2 or min(np.bincount(yb)) < 4:
            continue
        xtr, xte, ytr, yte = train_test_split(xb, yb, test_size=p.test_fraction,
                                              random_state=ctx.seed, stratify=yb)
        clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
        per_block.append({"block": b, "middle": b in blocks, "points": int(sel.sum()),
                          "accuracy": float(clf.score(xte, yte)),
                          "silhouette": float(silhouette_score(xb, yb, metric="cosine"))})
    pb = pd.DataFrame(per_block)
    mid_pb = pb[pb.middle] if len(pb) else pb

    in_mid = np.isin(block, blocks)
    xm, km, bm, pm, tm = x[in_mid], kind[in_mid], block[in_mid], pos[in_mid], tok[in_mid]
    cap = charts.sample_rows(len(xm), ctx.capture.max_chart_points)
    total = int(r["cov_raw"].state["n"])
    words = ctx.token_text(tm[cap])
    shown = charts.shown_line(len(cap), total)
    tooltip = ["kind", "block", "position", "token"]
    for label, cov_key, data in (("raw", "cov_raw", xm), ("unit", "cov_unit", pca.unit(xm))):
        cov: Covariance = r[cov_key]  # type: ignore[assignment]
        fit = pca.from_covariance(cov.state["mean"], cov.covariance(), 2)
        xy = fit.transform(data[cap])
        df = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1], "kind": km[cap], "block": bm[cap],
                           "position": pm[cap], "token": words})
        out.charts[f"pca_{label}"] = charts.titled(
            charts.scatter_by_block(df, "pc1:Q", "pc2:Q", tooltip, kind="kind").properties(
                width=420, height=420),
            f"PCA of attention and MLP outputs ({label}), blocks {blocks[0]}-{blocks[-1]}",
            [shown + f"; PCA fitted on all {total:,} tokens" + (
                " (exact covariance)" if ctx.capture.cov_every == 1 else
                f" (covariance from 1 in {ctx.capture.cov_every} tokens"
                + (", all high-norm tokens kept)" if label == "raw" and ctx.capture.cov_keep_above
                   else ")")),
             f"explained variance {fit.explained_variance_ratio[0]:.1%}, "
             f"{fit.explained_variance_ratio[1]:.1%}"])
        out.metrics[f"pca_{label}_evr12"] = (float(fit.explained_variance_ratio.sum()),
                                             f"variance explained by PC1+PC2 ({label})")

    ms: MeanState = r["mean"]  # type: ignore[assignment]
    means, counts = ms.means()
    first = int(p.skip_first)
    m = means[:, 0, first:, :]
    ok = counts[:, 0, first:] > 0
    site_kind = np.array([s.point for s in ms.sites])[:, None].repeat(m.shape[1], 1)
    site_block = np.array([s.block for s in ms.sites])[:, None].repeat(m.shape[1], 1)
    site_pos = np.arange(first, first + m.shape[1])[None, :].repeat(m.shape[0], 0)
    fit = pca.fit(m[ok], 2)
    xy = fit.transform(m[ok])
    df = pd.DataFrame({"pc1": xy[:, 0], "pc2": xy[:, 1], "kind": site_kind[ok],
                       "block": site_block[ok], "position": site_pos[ok]})
    shown_mean = charts.spread_rows(len(df), ctx.capture.max_chart_points, ctx.seed)
    out.charts["pca_mean_over_samples"] = charts.titled(
        charts.scatter_by_block(df.iloc[shown_mean], "pc1:Q", "pc2:Q",
                                ["kind", "block", "position"], kind="kind").properties(
            width=420, height=420),
        "PCA of outputs averaged over samples (one point per block, kind and position)",
        [charts.shown_line(len(shown_mean), len(df)) + "; PCA fitted on all of them"])

    ux = pca.unit(xm[: p.umap_points])
    emb, trust = _umap(ux, p, ctx.seed)
    udf = pd.DataFrame({"umap1": emb[:, 0], "umap2": emb[:, 1], "kind": km[: len(ux)],
                        "block": bm[: len(ux)], "position": pm[: len(ux)],
                        "token": ctx.token_text(tm[: len(ux)])})
    out.charts["umap"] = charts.titled(
        charts.scatter_by_block(udf, "umap1:Q", "umap2:Q", tooltip, kind="kind").properties(
            width=420, height=420),
        "UMAP (cosine) of attention and MLP unit outputs",
        [charts.shown_line(len(ux), total) + f"; trustworthiness {trust:.3f} (1 = neighbours kept)"])
    out.charts["separability_by_block"] = charts.titled(
        charts.line(pb.melt(id_vars=["block"], value_vars=["accuracy", "silhouette"],
                            var_name="measure"), "block:Q", "value:Q", color="measure",
                    tooltip=["block", "measure", "value"]),
        "Attention vs MLP separability per block",
        ["accuracy: held-out logistic regression on unit vectors (0.5 = chance)"])
    out.metrics.update({
        "attn_mlp_separability": (float(mid_pb.accuracy.mean()) if len(mid_pb) else float("nan"),
                                  "mean held-out accuracy telling attention from MLP outputs "
                                  "(unit vectors) over the middle blocks; 0.5 is chance"),
        "attn_mlp_silhouette": (float(mid_pb.silhouette.mean()) if len(mid_pb) else float("nan"),
                                "mean cosine silhouette of the attention/MLP groups, middle blocks"),
        "umap_trustworthiness": (trust, "UMAP trustworthiness (k=10, cosine) of the 2-D picture"),
    })
    out.tables["separability_by_block"] = per_block
    return out


def _umap(x: np.ndarray, p: Params, seed: int) -> tuple[np.ndarray, float]:
    import umap
    from sklearn.manifold import trustworthiness

    n_neighbors = max(2, min(p.umap_neighbors, len(x) - 1))
    emb = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, random_state=seed,
                    n_jobs=1, init="spectral" if len(x) > n_neighbors + 2 else "random"
                    ).fit_transform(x)
    k = max(1, min(10, len(x) // 2 - 1))
    return emb, float(trustworthiness(x, emb, n_neighbors=k, metric="cosine"))
