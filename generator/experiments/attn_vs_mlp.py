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
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from generator import charts as ch
from generator.analysis import frames, pca
from generator.capture.sites import COMPONENT_POINTS, Site, all_sites, middle_blocks
from generator.experiment import ChartView, Claim, Context, Experiment, Headline, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir


@dataclass(frozen=True)
class Params:
    blocks: list[int] | None = None
    """[first, last] middle blocks (inclusive); default: the middle 60% of depth."""
    umap_points: int = 2000
    umap_neighbors: int = 15
    test_fraction: float = 0.3
    skip_first: bool = True
    """Leave position 0 out, as the paper does."""


def mids(ctx: Context, p: Params) -> list[int]:
    if p.blocks:
        return list(range(p.blocks[0], min(p.blocks[-1], ctx.n_blocks - 1) + 1))
    return middle_blocks(ctx.n_blocks)


def _sites(ctx: Context, blocks: list[int]) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks) if s.point in COMPONENT_POINTS and s.block in blocks]


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir

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


LABELS = ["kind", "block", "position", "token"]


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import train_test_split

    r = stats["text"]
    res: Reservoir = r["sample"]
    first = int(p.skip_first)
    x, lab = frames.reservoir(res, min_position=first)
    lab = lab.rename(columns={"point": "kind"})
    kind, block = lab["kind"].to_numpy(), lab["block"].to_numpy()
    blocks = mids(ctx, p)

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
    mid_pb = [row for row in per_block if row["middle"]]

    in_mid = np.isin(block, blocks)
    xm = x[in_mid]
    lm = lab[in_mid].reset_index(drop=True)
    lm["token"] = frames.token_texts(lm["token_id"], ctx.token_text)
    tables: dict[str, list[dict]] = {}
    metrics: dict[str, float] = {}
    evr: dict[str, list[float]] = {}
    for label, cov_key, data in (("raw", "cov_raw", xm), ("unit", "cov_unit", pca.unit(xm))):
        cov: Covariance = r[cov_key]
        fit = pca.from_covariance(cov.state["mean"], cov.covariance(), 2)
        tables[f"pca_{label}"] = frames.rows(lm, fit.transform(data), columns=LABELS)
        evr[label] = [float(v) for v in fit.explained_variance_ratio]
        metrics[f"pca_{label}_evr12"] = float(fit.explained_variance_ratio.sum())

    ms: MeanState = r["mean"]
    m, mlab = frames.mean_states(ms, min_position=first)
    mfit = pca.fit(m, 2)
    tables["pca_mean_over_samples"] = frames.rows(mlab.rename(columns={"point": "kind"}),
                                                  mfit.transform(m))

    ux = pca.unit(xm[: p.umap_points])
    emb, trust = _umap(ux, p, ctx.seed)
    tables["umap"] = frames.rows(lm.iloc[: len(ux)], emb, names=("umap1", "umap2"),
                                 columns=LABELS)
    tables["separability_by_block"] = per_block
    metrics.update({
        "attn_mlp_separability": (float(np.mean([row["accuracy"] for row in mid_pb]))
                                  if mid_pb else float("nan")),
        "attn_mlp_silhouette": (float(np.mean([row["silhouette"] for row in mid_pb]))
                                if mid_pb else float("nan")),
        "umap_trustworthiness": trust,
    })
    return Result(
        metrics=metrics, tables=tables,
        facts={"blocks": [blocks[0], blocks[-1]], "total_tokens": int(r["cov_raw"].state["n"]),
               "evr": evr, "cov_every": int(ctx.capture.cov_every),
               "cov_keep_above": float(ctx.capture.cov_keep_above), "umap_points": len(ux)})


def _umap(x: np.ndarray, p: Params, seed: int) -> tuple[np.ndarray, float]:
    import umap
    from sklearn.manifold import trustworthiness

    n_neighbors = max(2, min(p.umap_neighbors, len(x) - 1))
    emb = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, random_state=seed,
                    n_jobs=1, init="spectral" if len(x) > n_neighbors + 2 else "random"
                    ).fit_transform(x)
    k = max(1, min(10, len(x) // 2 - 1))
    return emb, float(trustworthiness(x, emb, n_neighbors=k, metric="cosine"))


def _fitted_on(f: dict, label: str) -> str:
    """Subtitle words on the tokens the covariance behind a PCA saw."""
    every = f["cov_every"]
    if every == 1:
        how = " (exact covariance)"
    else:
        kept = ", all high-norm tokens kept" if label == "raw" and f["cov_keep_above"] else ""
        how = f" (covariance from 1 in {every} tokens{kept})"
    return f"; PCA fitted on all {f['total_tokens']:,} tokens" + how


def charts(r: Result, view: ChartView) -> dict[str, object]:
    f = r.facts
    first, last = f["blocks"]
    total = f["total_tokens"]
    out: dict[str, object] = {}
    for label in ("raw", "unit"):
        df = r.frame(f"pca_{label}")
        shown = df.iloc[ch.sample_rows(len(df), view.max_chart_points)]
        e1, e2 = f["evr"][label]
        out[f"pca_{label}"] = ch.titled(
            ch.scatter_by_block(shown, "pc1:Q", "pc2:Q", LABELS, kind="kind").properties(
                width=420, height=420),
            f"PCA of attention and MLP outputs ({label}), blocks {first}-{last}",
            [ch.shown_line(len(shown), total) + _fitted_on(f, label),
             f"explained variance {e1:.1%}, {e2:.1%}"])
    mean = r.frame("pca_mean_over_samples")
    keep = ch.spread_rows(len(mean), view.max_chart_points, view.seed)
    out["pca_mean_over_samples"] = ch.titled(
        ch.scatter_by_block(mean.iloc[keep], "pc1:Q", "pc2:Q", ["kind", "block", "position"],
                            kind="kind").properties(width=420, height=420),
        "PCA of outputs averaged over samples (one point per block, kind and position)",
        [ch.shown_line(len(keep), len(mean)) + "; PCA fitted on all of them"])
    umap = r.frame("umap")
    trust = r.metrics["umap_trustworthiness"]
    out["umap"] = ch.titled(
        ch.scatter_by_block(umap, "umap1:Q", "umap2:Q", LABELS, kind="kind").properties(
            width=420, height=420),
        "UMAP (cosine) of attention and MLP unit outputs",
        [ch.shown_line(len(umap), total) + f"; trustworthiness {trust:.3f} (1 = neighbours kept)"])
    pb = r.frame("separability_by_block")
    long = (pb.melt(id_vars=["block"], value_vars=["accuracy", "silhouette"], var_name="measure")
            if len(pb) else pd.DataFrame(columns=["block", "measure", "value"]))
    out["separability_by_block"] = ch.titled(
        ch.line(long, "block:Q", "value:Q", color="measure", tooltip=["block", "measure", "value"]),
        "Attention vs MLP separability per block",
        ["accuracy: held-out logistic regression on unit vectors (0.5 = chance)"])
    return out


EXPERIMENT = Experiment(
    name="attn_vs_mlp",
    title="Attention vs MLP outputs",
    doc=__doc__,
    order=20,
    modes=("text",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "pca_raw_evr12": "variance explained by PC1+PC2 (raw)",
        "pca_unit_evr12": "variance explained by PC1+PC2 (unit)",
        "attn_mlp_separability": "mean held-out accuracy telling attention from MLP outputs "
                                 "(unit vectors) over the middle blocks; 0.5 is chance",
        "attn_mlp_silhouette": "mean cosine silhouette of the attention/MLP groups, middle blocks",
        "umap_trustworthiness": "UMAP trustworthiness (k=10, cosine) of the 2-D picture",
    },
    headlines=(Headline("attn_mlp_separability", "attn/MLP separability"),),
    claims=(Claim("attn_mlp_separability", "attn_mlp_separability_min", 0.9,
                  "attention and MLP outputs are linearly separable above {t} in middle blocks"),),
    tables=("separability_by_block",),
)
