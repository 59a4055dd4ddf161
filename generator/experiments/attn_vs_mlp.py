"""Attention vs MLP outputs: whether they separate in the middle blocks more than elsewhere.

The paper projects the component outputs (what attention and the MLP add to the residual, before
the add) of the middle blocks to 2-D, by PCA on raw and on unit vectors and by UMAP (cosine),
and sees attention apart from the MLP. The same pictures are drawn here (blue shades attention,
orange shades MLP, light to dark by block; a slider shows one block at a time and a selector one
component), and the separation is measured in every block, so that the middle blocks can be
compared with the others and with chance.

**Middle blocks** are the middle 60% of depth (blocks 6-23 of SmolLM2's 30), the range the paper
draws (GPT-2 blocks 2-8, LLaMA 6-27); the blocks before them are *early*, after them *late*.

**Classifier.** In each block, a logistic regression (L2 penalty with C = 0.1, classes weighted
to balance) tells attention from MLP outputs as unit vectors, on a seeded sample of the outputs
(4 x `points_per_site` per component and block: about 800 per block by default). The score is
balanced accuracy on the held-out folds of a stratified 5-fold split. The same classifier on
shuffled labels, with the same folds (mean of 3 shuffles), is the chance baseline (0.5 in
expectation). *Accuracy above baseline* is what each block reports, with the cosine silhouette
of the two groups (how far apart they sit compared with their spread).

**The claim reads the middle-block contrast:** accuracy above baseline in the middle blocks,
minus the larger of the same in the early and the late blocks. Accuracy alone cannot carry the
paper's "separation in middle layers". On SmolLM2 (576 dimensions, 64 x 256 tokens) held-out
accuracy is 0.97-1.0 in every block, early and late included, and it is 0.99-1.0 in a randomly
initialized copy of SmolLM2 as well (in every block, trained or not, attention outputs cluster
around a direction of their own). The contrast is high only when the middle blocks separate and
the outer ones do not; SmolLM2 and its random copy both measure about 0 (-0.009 and -0.004).

**Left out of the geometry.** Position 0, as in the paper, and *massive-norm* points: a sampled
output above 4x the median norm of its block and component. These are a few tokens and positions
whose norm dwarfs the rest; left in, they alone decide the first principal component. The
covariance behind each PCA drops tokens above 4x their site's median in each batch. The
mean-over-samples picture drops (block, component, position) means above 4x their site's median.
Each subtitle says what was left out, and the *massive points* table lists the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from generator import charts as ch
from generator.analysis import frames, outliers, pca
from generator.capture.sites import COMPONENT_POINTS, Site, all_sites, middle_blocks
from generator.experiment import ChartView, Claim, Comparison, Context, Experiment, Headline, Needs, Result

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
    skip_first: bool = True
    """Leave position 0 out, as the paper does."""
    probe_factor: int = 4
    """Sampled outputs per component and block for the classifier, in `points_per_site` units."""
    folds: int = 5
    """Stratified folds of the held-out accuracy."""
    C: float = 0.1
    """Inverse L2 strength of the logistic regression (on unit vectors)."""
    shuffles: int = 3
    """Shuffled-label repetitions behind each block's chance baseline (their mean)."""


def mids(ctx: Context, p: Params) -> list[int]:
    if p.blocks:
        return list(range(p.blocks[0], min(p.blocks[-1], ctx.n_blocks - 1) + 1))
    return middle_blocks(ctx.n_blocks)


def _sites(ctx: Context, blocks: list[int]) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks) if s.point in COMPONENT_POINTS
            and s.block in blocks and s.point not in ctx.absent_points]


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir

    every = _sites(ctx, list(range(ctx.n_blocks)))
    middle = _sites(ctx, mids(ctx, p))
    k = ctx.capture.points_per_site * max(1, p.probe_factor) * len(every)
    first = int(p.skip_first)
    d = ctx.d_model
    cov = {"every": ctx.capture.cov_every, "min_position": first, "drop_above": outliers.FACTOR,
           "matmul_dtype": ctx.cov_matmul}
    return {"text": {
        "sample": Reservoir(every, d, k=k, seed=ctx.seed,
                            population=ctx.population("text", len(every))),
        "cov_raw": Covariance(middle, d, keep_above=ctx.capture.cov_keep_above, **cov),
        "cov_unit": Covariance(middle, d, unit=True, **cov),
        "mean": MeanState(middle, d, keep=("site", "position"), seq_len=ctx.seq_len["text"]),
    }}


LABELS = ["kind", "block", "sample", "position", "token"]
STAGES = ("early", "middle", "late")


def stage_of(block: int, first: int, last: int) -> str:
    return "early" if block < first else "late" if block > last else "middle"


def separability(x: np.ndarray, y: np.ndarray, p: Params, seed: int) -> dict[str, float]:
    """Held-out balanced accuracy of the classifier, and the same on shuffled labels.

    Stratified k-fold (k = `p.folds`, fewer when a class is smaller), the same folds for the
    real and the shuffled labels; returns the fold means and the spread of the real folds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    k = int(min(p.folds, np.bincount(y).min()))
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))

    def scores(labels: np.ndarray) -> list[float]:
        out = []
        for train, test in splits:
            clf = LogisticRegression(C=p.C, class_weight="balanced", max_iter=1000)
            clf.fit(x[train], labels[train])
            out.append(balanced_accuracy_score(labels[test], clf.predict(x[test])))
        return out

    real = scores(y)
    rng = np.random.default_rng(seed)
    null = [float(np.mean(scores(rng.permutation(y)))) for _ in range(max(1, p.shuffles))]
    return {"accuracy": float(np.mean(real)), "accuracy_sd": float(np.std(real)),
            "shuffled": float(np.mean(null)), "folds": k}


def per_block(x: np.ndarray, lab: pd.DataFrame, ctx: Context, p: Params,
              blocks: list[int]) -> list[dict[str, Any]]:
    """One row per block: points, accuracy, shuffled baseline, their difference, silhouette."""
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    kind, block = lab["kind"].to_numpy(), lab["block"].to_numpy()
    rows = []
    with threadpool_limits(1):  # small problems: threads cost more than they give here
        for b in range(ctx.n_blocks):
            sel = block == b
            xb, yb = pca.unit(x[sel]), (kind[sel] == "mlp").astype(int)
            if len(set(yb)) < 2 or min(np.bincount(yb)) < 4:
                continue
            s = separability(xb, yb, p, ctx.seed + b)
            rows.append({"block": b, "stage": stage_of(b, blocks[0], blocks[-1]),
                         "attn_points": int((yb == 0).sum()), "mlp_points": int((yb == 1).sum()),
                         "accuracy": s["accuracy"], "accuracy_sd": s["accuracy_sd"],
                         "shuffled": s["shuffled"], "margin": s["accuracy"] - s["shuffled"],
                         "silhouette": float(silhouette_score(xb, yb, metric="cosine")),
                         "folds": s["folds"]})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Stage means and the middle-block contrast (NaN where a stage has no block)."""
    out: dict[str, float] = {}
    for stage in STAGES:
        sel = [r for r in rows if r["stage"] == stage]
        for col in ("accuracy", "shuffled", "margin", "silhouette"):
            out[f"{col}_{stage}"] = (float(np.mean([r[col] for r in sel])) if sel
                                     else float("nan"))
    outer = [out[f"margin_{s}"] for s in ("early", "late") if np.isfinite(out[f"margin_{s}"])]
    out["contrast"] = out["margin_middle"] - max(outer) if outer else float("nan")
    return out


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    r = stats["text"]
    res: Reservoir = r["sample"]
    first = int(p.skip_first)
    x, lab = frames.reservoir(res, min_position=first, decode=ctx.token_text)
    lab = lab.rename(columns={"point": "kind"})
    blocks = mids(ctx, p)

    # Massive-norm points: above FACTOR x the median of their block and component.
    norms = np.linalg.norm(x, axis=1)
    big = outliers.massive_by_group(norms, lab["kind"] + "@" + lab["block"].astype(str))
    med = pd.Series(norms).groupby([lab["kind"], lab["block"]]).transform("median").to_numpy()
    massive_rows = lab[big].assign(norm=norms[big], times_median=norms[big] / med[big])
    x, lab = x[~big], lab[~big].reset_index(drop=True)

    rows = per_block(x, lab, ctx, p, blocks)
    s = summary(rows)

    in_mid = np.isin(lab["block"].to_numpy(), blocks)
    shown = ctx.capture.points_per_site * len(_sites(ctx, blocks))
    xm, lm = x[in_mid][:shown], lab[in_mid].reset_index(drop=True).iloc[:shown]
    tables: dict[str, Any] = {}
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
    mlab = mlab.rename(columns={"point": "kind"})
    mbig = outliers.massive_by_group(np.linalg.norm(m, axis=1),
                                     mlab["kind"] + "@" + mlab["block"].astype(str))
    m_out = mlab[mbig]
    m, mlab = m[~mbig], mlab[~mbig].reset_index(drop=True)
    mfit = pca.fit(m, 2)
    tables["pca_mean_over_samples"] = frames.rows(mlab, mfit.transform(m))

    ux = pca.unit(xm[: p.umap_points])
    emb, trust = _umap(ux, p, ctx.seed)
    tables["umap"] = frames.rows(lm.iloc[: len(ux)], emb, names=("umap1", "umap2"),
                                 columns=LABELS)
    tables["separability_by_block"] = rows
    tables["massive_points"] = [
        {"block": int(q.block), "kind": q.kind, "position": int(q.position),
         "sample": int(q.sample), "token": q.token, "norm": float(q.norm),
         "times_median": float(q.times_median)}
        for q in massive_rows.sort_values(["block", "kind", "position"]).itertuples()]
    metrics.update({
        "attn_mlp_separability": s["accuracy_middle"],
        "attn_mlp_shuffled": s["shuffled_middle"],
        "attn_mlp_margin_middle": s["margin_middle"],
        "attn_mlp_margin_early": s["margin_early"],
        "attn_mlp_margin_late": s["margin_late"],
        "attn_mlp_middle_contrast": s["contrast"],
        "attn_mlp_silhouette": s["silhouette_middle"],
        "attn_mlp_silhouette_outer": float(np.nanmean([s["silhouette_early"],
                                                       s["silhouette_late"]]))
        if np.isfinite([s["silhouette_early"], s["silhouette_late"]]).any() else float("nan"),
        "umap_trustworthiness": trust,
        "massive_points_left_out": float(big.sum()),
    })
    early = [b for b in range(ctx.n_blocks) if b < blocks[0]]
    late = [b for b in range(ctx.n_blocks) if b > blocks[-1]]
    facts = {
        "blocks": [blocks[0], blocks[-1]], "n_blocks": ctx.n_blocks,
        "early": [early[0], early[-1]] if early else None,
        "late": [late[0], late[-1]] if late else None,
        "total_tokens": int(r["cov_raw"].state["n"]), "evr": evr,
        "cov_every": int(ctx.capture.cov_every), "cov_matmul": ctx.cov_matmul,
        "cov_keep_above": float(ctx.capture.cov_keep_above), "umap_points": len(ux),
        "factor": outliers.FACTOR, "classifier": {
            "C": p.C, "folds": p.folds, "shuffles": p.shuffles,
            "median_points": int(np.median([q["attn_points"] + q["mlp_points"] for q in rows]))
            if rows else 0},
        "sampled_points": int(len(norms)),
        "massive": {"points": int(big.sum()),
                    "where": outliers.position_counts(massive_rows["position"].to_numpy())},
        "mean_massive": {"slots": int(mbig.sum()), "of": int(len(mbig)),
                         "positions": sorted({int(q) for q in m_out["position"]})},
    }
    return Result(metrics=metrics, tables=tables, facts=facts, notes=[_note(facts)])


def _note(f: dict[str, Any]) -> str:
    first, last = f["blocks"]
    c = f["classifier"]
    outer = " and ".join(f"{name} {rng[0]}-{rng[1]}" for name, rng in
                         (("early", f["early"]), ("late", f["late"])) if rng)
    m = f["massive"]
    left = (f"{m['points']:,} of {f['sampled_points']:,} sampled outputs are massive-norm "
            f"(above {f['factor']:g}x their block and component's median) and left out: "
            f"{m['where']}." if m["points"] else
            f"No sampled output is above {f['factor']:g}x its block and component's median norm.")
    return (f"Middle blocks {first}-{last} of {f['n_blocks']}" + (f"; {outer}" if outer else "")
            + f". Classifier: logistic regression (C = {c['C']:g}, balanced class weights) on "
              f"unit vectors, about {c['median_points']:,} sampled outputs per block, balanced "
              f"accuracy over {c['folds']} stratified folds, baseline the mean over "
              f"{c['shuffles']} shuffles of the labels. " + left)


def _umap(x: np.ndarray, p: Params, seed: int) -> tuple[np.ndarray, float]:
    import umap
    from sklearn.manifold import trustworthiness

    n_neighbors = max(2, min(p.umap_neighbors, len(x) - 1))
    emb = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, random_state=seed,
                    n_jobs=1, init="spectral" if len(x) > n_neighbors + 2 else "random"
                    ).fit_transform(x)
    k = max(1, min(10, len(x) // 2 - 1))
    return emb, float(trustworthiness(x, emb, n_neighbors=k, metric="cosine"))


def contrast_where(r: Result, t: float) -> str:
    """Where the separation is, per stage: accuracy above the shuffled baseline, and its size."""
    rows = r.tables.get("separability_by_block", [])
    if not rows or "stage" not in rows[0]:
        return ""
    f = r.facts
    parts = []
    for stage, rng in (("early", f.get("early")), ("middle", f.get("blocks")),
                       ("late", f.get("late"))):
        sel = [q for q in rows if q["stage"] == stage]
        if sel and rng:
            acc = np.mean([q["accuracy"] for q in sel])
            base = np.mean([q["shuffled"] for q in sel])
            parts.append(f"{stage} blocks {rng[0]}-{rng[1]}: accuracy {acc:.3f} against "
                         f"{base:.3f} shuffled")
    above = sum(q["margin"] >= 0.25 for q in rows)
    return ("; ".join(parts) + f". {above} of {len(rows)} blocks are at least 0.25 above their "
            "shuffled baseline")


CLAIM = Claim("attn_mlp_middle_contrast", "attn_mlp_separability_min", 0.1,
              "attention and MLP outputs separate more in the middle blocks than in the early "
              "and late ones: held-out accuracy above the shuffled-label baseline is at least "
              "{t} higher in the middle blocks than in either outer range",
              where=contrast_where)


def _fitted_on(f: dict, label: str) -> str:
    """Subtitle words on the covariance behind a PCA (`pca.fitted_on`) and what it left out."""
    kept = label == "raw" and bool(f["cov_keep_above"])
    return (f"{pca.fitted_on(f, kept=kept)}; tokens above {f['factor']:g}x their site's median "
            "norm left out of the fit")


def _left_out(f: dict) -> str:
    m = f["massive"]
    if not m["points"]:
        return "position 0 left out; no massive-norm point in the sample"
    return f"position 0 and {m['points']:,} massive-norm points left out ({m['where']})"


TIPS = [ch.tip("component", numeric=False), ch.tip("block"),
        ch.tip("position", "sequence position"), ch.tip("sample"),
        ch.tip("token", numeric=False)]


def _points(df: pd.DataFrame, cap: int) -> pd.DataFrame:
    df = df.iloc[ch.sample_rows(len(df), cap)].copy()
    df["component"] = df["kind"].map(ch.KIND_WORDS)
    if "token" in df:
        df["token"] = df["token"].map(ch.visible_token)
    return df


def _scatter(df: pd.DataFrame, x: str, y: str, tips: list[Any], blocks: list[int]) -> Any:
    chart = ch.scatter_by_block(df, x, y, [*tips, ch.tip(x.split(":")[0]),
                                           ch.tip(y.split(":")[0])], kind="kind")
    return ch.block_slider(chart, df, x, y, blocks).properties(width=420, height=420)


def _clipped(df: pd.DataFrame, x: str, y: str) -> str:
    return ch.clipped_line(ch.clip(df, [x, y], {f: ch.robust_domain(df[f]) for f in (x, y)}))


def charts(r: Result, view: ChartView) -> dict[str, object]:
    f = r.facts
    first, last = f["blocks"]
    blocks = list(range(first, last + 1))
    total = f["total_tokens"]
    out: dict[str, object] = {"separability_by_block": _separability_chart(r)}
    for label in ("raw", "unit"):
        full = r.frame(f"pca_{label}")
        df = _points(full, view.max_chart_points)
        e1, e2 = f["evr"][label]
        out[f"pca_{label}"] = ch.titled(
            _scatter(df, "pc1:Q", "pc2:Q", TIPS, blocks),
            f"PCA of attention and MLP outputs ({label}), blocks {first}-{last}",
            [f"{ch.shown_line(len(df), len(full))} (a seeded sample); {_left_out(f)}",
             _fitted_on(f, label) + f"; explained variance {e1:.1%}, {e2:.1%}",
             _clipped(df, "pc1", "pc2")])
    mean = r.frame("pca_mean_over_samples")
    keep = ch.spread_rows(len(mean), view.max_chart_points, view.seed)
    md = mean.iloc[keep].assign(component=lambda d: d["kind"].map(ch.KIND_WORDS))
    mm = f["mean_massive"]
    gone = (f"{mm['slots']:,} massive-norm means left out ({_positions(mm['positions'])})"
            if mm["slots"] else "no massive-norm mean")
    out["pca_mean_over_samples"] = ch.titled(
        _scatter(md, "pc1:Q", "pc2:Q", TIPS[:3], blocks),
        "PCA of outputs averaged over samples (one point per block, component and position)",
        [f"{ch.shown_line(len(md), len(mean))}; position 0 and {gone}; PCA fitted on the rest",
         _clipped(md, "pc1", "pc2")])
    umap = _points(r.frame("umap"), view.max_chart_points)
    trust = r.metrics["umap_trustworthiness"]
    out["umap"] = ch.titled(
        _scatter(umap, "umap1:Q", "umap2:Q", TIPS, blocks),
        "UMAP (cosine) of attention and MLP unit outputs",
        [f"{ch.shown_line(len(umap), total)}; {_left_out(f)}",
         f"trustworthiness {trust:.3f} (1 = neighbours kept)", _clipped(umap, "umap1", "umap2")])
    return out


SERIES = {"accuracy": "held-out accuracy", "shuffled": "same classifier, shuffled labels",
          "silhouette": "silhouette (cosine)"}


def _separability_chart(r: Result) -> Any:
    import altair as alt

    f = r.facts
    first, last = f["blocks"]
    pb = r.frame("separability_by_block")
    cols = ["block", "stage", "accuracy", "accuracy_sd", "shuffled", "margin", "silhouette"]
    pb = pb[cols] if len(pb) else pd.DataFrame(columns=cols)
    data = pd.concat([pb.assign(series=SERIES[c], value=pb[c]) for c in SERIES],
                     ignore_index=True)
    x = alt.X("block:Q", title="block", axis=alt.Axis(format="d", tickMinStep=1),
              scale=alt.Scale(domain=[-0.5, f["n_blocks"] - 0.5], nice=False))
    tips = [ch.typed_tip("series:N", "measure"), ch.typed_tip("block:Q"),
            ch.typed_tip("stage:N", "blocks"), ch.typed_tip("value:Q"),
            ch.typed_tip("accuracy:Q", "held-out accuracy"),
            ch.typed_tip("accuracy_sd:Q", "spread over folds (sd)"),
            ch.typed_tip("shuffled:Q", "shuffled-label baseline"),
            ch.typed_tip("margin:Q", "accuracy above baseline")]
    acc_title = "balanced accuracy (held out)"
    acc = alt.Chart().transform_filter(f"datum.series != '{SERIES['silhouette']}'").mark_line(
        point=alt.OverlayMarkDef(size=22)).encode(
        x=x, y=alt.Y("value:Q", title=acc_title, scale=alt.Scale(domain=[0.3, 1.0])),
        color=alt.Color("series:N", title="measure", sort=list(SERIES.values())[:2],
                        scale=alt.Scale(range=["#08306b", "#9e9ac8"])),
        strokeDash=alt.StrokeDash("series:N", sort=list(SERIES.values())[:2], legend=None),
        tooltip=tips)
    top = alt.layer(ch.shade_blocks(first, last), acc,
                    ch.threshold_rule(0.5, "chance 0.5", acc_title),
                    data=data).properties(width=560, height=220)
    sil_title = "silhouette (cosine), attention vs MLP"
    sil = alt.Chart().transform_filter(f"datum.series == '{SERIES['silhouette']}'").mark_line(
        point=alt.OverlayMarkDef(size=22, color="#e6550d"), color="#e6550d").encode(
        x=x, y=alt.Y("value:Q", title=sil_title), tooltip=tips)
    bottom = alt.layer(ch.shade_blocks(first, last), sil,
                       ch.threshold_rule(0.0, "no separation", sil_title),
                       data=data).properties(width=560, height=160)
    m = r.metrics
    words = [f"shaded: middle blocks {first}-{last}; accuracy above the shuffled baseline "
             f"{_signed(m.get('attn_mlp_margin_middle'))} in the middle, "
             f"{_signed(m.get('attn_mlp_margin_early'))} early, "
             f"{_signed(m.get('attn_mlp_margin_late'))} late: middle-block contrast "
             f"{_signed(m.get('attn_mlp_middle_contrast'))}",
             "logistic regression on unit vectors, balanced accuracy over stratified folds; "
             "baseline: the same on shuffled labels"]
    return ch.titled(alt.vconcat(top, bottom).resolve_scale(color="independent"),
                     "Attention vs MLP separability per block, against chance", words)


def _positions(positions: list[int]) -> str:
    """'position 1', 'positions 1, 5, 9'."""
    shown = ", ".join(map(str, positions[:8])) + (" ..." if len(positions) > 8 else "")
    return f"position{'s' * (len(positions) != 1)} {shown}"


def _signed(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:+.3f}"


def _margins(r: Result) -> list[dict[str, Any]]:
    return [{"block": q["block"], "value": q["margin"]}
            for q in r.tables.get("separability_by_block", [])]


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
        "attn_mlp_middle_contrast": "accuracy above the shuffled baseline in the middle blocks "
                                    "minus the larger of the same in the early and the late "
                                    "blocks (the claim's measure; about 0 when every block "
                                    "separates alike)",
        "attn_mlp_separability": "mean held-out balanced accuracy telling attention from MLP "
                                 "outputs (unit vectors), middle blocks; 0.5 is chance",
        "attn_mlp_shuffled": "the same classifier on shuffled labels, middle blocks (the "
                             "chance baseline)",
        "attn_mlp_margin_middle": "accuracy above the shuffled baseline, mean over the middle "
                                  "blocks",
        "attn_mlp_margin_early": "accuracy above the shuffled baseline, early blocks",
        "attn_mlp_margin_late": "accuracy above the shuffled baseline, late blocks",
        "attn_mlp_silhouette": "mean cosine silhouette of the attention/MLP groups, middle blocks",
        "attn_mlp_silhouette_outer": "the same over the early and late blocks",
        "pca_raw_evr12": "variance explained by PC1+PC2 (raw, massive tokens left out)",
        "pca_unit_evr12": "variance explained by PC1+PC2 (unit, massive tokens left out)",
        "umap_trustworthiness": "UMAP trustworthiness (k=10, cosine) of the 2-D picture",
        "massive_points_left_out": "sampled outputs above 4x their block and component's median "
                                   "norm, left out of every picture and number",
    },
    headlines=(Headline("attn_mlp_middle_contrast", "attn/MLP middle-block contrast"),
               Headline("attn_mlp_margin_middle", "attn/MLP accuracy above chance (middle)")),
    claims=(CLAIM,),
    tables=("separability_by_block", "massive_points"),
    paper_figures={"pca_raw": "Attention vs MLP: PCA 2-D of the middle blocks' component outputs (raw)", "pca_unit": "Attention vs MLP: PCA 2-D on unit vectors", "pca_mean_over_samples": "Attention vs MLP: PCA of outputs averaged over samples", "umap": "Attention vs MLP: UMAP 2-D, cosine metric"},  # noqa: E501
    comparisons=(Comparison("attn_mlp_margin", "Attention vs MLP: held-out accuracy above the "
                            "shuffled-label baseline, per block",
                            "accuracy above the shuffled baseline", _margins),),
)
