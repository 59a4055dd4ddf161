"""Layerwise evolution: the path the residual stream takes as depth grows.

All residual states (the initial embedding at block -1, after each attention add, after each MLP
add, and after the final norm at the last block + 1) are projected by one PCA fitted on their
unit vectors, shaded light to dark by block. A slider shows one block at a time. Two variants
average first: over samples (one point per capture point and position) and over positions (one
point per capture point and sample).

**Left out of the geometry.** Position 0, as in the paper, and *massive-norm* states: a sampled
state above 4x the median norm of its capture point, or a position whose mean state is above 4x
its capture point's median. These are a few tokens and positions (position 0 first of all) whose
norm dwarfs the rest. The covariance behind the PCA drops tokens above 4x their site's median in
each batch, and each subtitle says what was left out.

**Centroid steps** say how far each block moves the stream: the cosine distance (and the L2
distance) between the mean state after one block and after the previous one, the first step
going from the embedding to block 0. Position 0's mean state is its own series. A jump of
position 0 alone (in SmolLM2 its norm leaps to about 25,000 at block 11) would otherwise read as
a jump of the whole stream. The other positions form one series, with any other massive
position left out and drawn on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from generator import charts as ch
from generator.analysis import frames, outliers, pca
from generator.capture.sites import RESIDUAL_POINTS, Site, all_sites
from generator.experiment import ChartView, Comparison, Context, Experiment, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState


@dataclass(frozen=True)
class Params:
    skip_first: bool = True
    """Leave position 0 out of the pictures, as the paper does (it keeps its own centroid series)."""
    max_samples: int = 64
    """Samples kept apart for the mean-over-positions variant (memory is fixed by this)."""


def _sites(ctx: Context) -> list[Site]:
    return [s for s in all_sites(ctx.n_blocks)
            if s.point in RESIDUAL_POINTS and s.point not in ctx.absent_points]


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir

    sites, d = _sites(ctx), ctx.d_model
    first = int(p.skip_first)
    return {"text": {
        "sample": Reservoir(sites, d, k=ctx.capture.points_per_site * len(sites), seed=ctx.seed,
                            population=ctx.population("text", len(sites))),
        "cov_unit": Covariance(sites, d, unit=True, every=ctx.capture.cov_every,
                               min_position=first, drop_above=outliers.FACTOR,
                               matmul_dtype=ctx.cov_matmul),
        "by_position": MeanState(sites, d, keep=("site", "position"), seq_len=ctx.seq_len["text"]),
        "by_sample": MeanState(sites, d, keep=("site", "sample"), min_position=first,
                               max_samples=min(p.max_samples, ctx.n_samples["text"])),
    }}


VARIANTS = (("by_position", "averaged over samples", "position"),
            ("by_sample", "averaged over positions", "sample"))
OTHERS = "other positions"
MAX_SERIES = 3
"""Massive positions besides 0 drawn as their own centroid series (more are only left out)."""


def _site_key(lab: pd.DataFrame) -> pd.Series:
    return lab["point"] + "@" + lab["block"].astype(str)


def centroid_steps(ms: MeanState, d_model: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Steps between consecutive block centroids, per series of positions.

    Series: position 0; each other massive position (a position whose mean state is above
    FACTOR x the median of its capture point's positions, at any residual site; at most
    MAX_SERIES); and every remaining position. Returns the rows and the massive positions.
    """
    st = ms.arrays()
    n_sites = len(ms.sites)
    sums = st["sum"].reshape(n_sites, -1, d_model)
    counts = st["count"].reshape(n_sites, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[..., None]
    norms = np.linalg.norm(means, axis=-1)
    hot = set()
    for i in range(n_sites):
        hot |= set(outliers.massive_positions(norms[i]))
    massive = sorted(hot - {0})
    series = {"position 0": [0], **{f"position {q}": [q] for q in massive[:MAX_SERIES]}}
    rest = np.ones(sums.shape[1], bool)
    rest[[0, *massive]] = False
    order = [i for i, s in enumerate(ms.sites) if s.point in ("embed", "resid_mlp")]
    rows = []
    for name, positions in [*series.items(), (OTHERS, np.flatnonzero(rest))]:
        n = counts[:, positions].sum(1)
        cen = sums[:, positions].sum(1) / np.maximum(n, 1)[:, None]
        for i, j in zip(order[:-1], order[1:], strict=True):
            if n[i] == 0 or n[j] == 0:
                continue
            u, v = cen[i], cen[j]
            cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))
            rows.append({"block": ms.sites[j].block, "series": name, "cosine_distance": 1 - cos,
                         "l2_distance": float(np.linalg.norm(v - u)),
                         "centroid_norm": float(np.linalg.norm(v))})
    return rows, [0, *massive]


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    r = stats["text"]
    first = int(p.skip_first)
    cov: Covariance = r["cov_unit"]
    fit = pca.from_covariance(cov.state["mean"], cov.covariance(), 10)
    x, lab = frames.reservoir(r["sample"], min_position=first, decode=ctx.token_text)
    norms = np.linalg.norm(x, axis=1)
    big = outliers.massive_by_group(norms, _site_key(lab))
    med = pd.Series(norms).groupby(_site_key(lab)).transform("median").to_numpy()
    massive_rows = lab[big].assign(norm=norms[big], times_median=norms[big] / med[big])
    x, lab = x[~big], lab[~big].reset_index(drop=True)
    tables: dict[str, Any] = {
        "pca_unit": frames.rows(lab, fit.transform(pca.unit(x)),
                                columns=["point", "block", "sample", "position", "token"])}
    left: dict[str, dict[str, Any]] = {}
    for key, _, axis in VARIANTS:
        m, mlab = frames.mean_states(r[key], min_position=first)
        mbig = (outliers.massive_by_group(np.linalg.norm(m, axis=1), _site_key(mlab))
                if axis == "position" else np.zeros(len(m), bool))
        left[key] = {"slots": int(mbig.sum()), "of": int(len(mbig)),
                     "positions": sorted({int(q) for q in mlab[mbig]["position"]})
                     if axis == "position" else []}
        m, mlab = m[~mbig], mlab[~mbig].reset_index(drop=True)
        tables[f"pca_{key}"] = frames.rows(mlab, fit.transform(pca.unit(m)),
                                           columns=["point", "block", axis])

    rows, massive = centroid_steps(r["by_position"], ctx.d_model)
    tables["centroid_steps"] = rows
    tables["massive_points"] = [
        {"point": q.point, "block": int(q.block), "position": int(q.position),
         "sample": int(q.sample), "token": q.token, "norm": float(q.norm),
         "times_median": float(q.times_median)}
        for q in massive_rows.sort_values(["block", "point", "position"]).itertuples()]
    others = [row for row in rows if row["series"] == OTHERS]
    zero = [row for row in rows if row["series"] == "position 0"]

    def top(rs: list[dict[str, Any]]) -> float:
        """Block (1 or later) with the largest step (the step in from the embedding is large)."""
        rs = [row for row in rs if row["block"] >= 1]
        steps = np.array([row["cosine_distance"] for row in rs], dtype=float)
        return float(rs[int(np.nanargmax(steps))]["block"]) if len(rs) else float("nan")

    evr = fit.explained_variance_ratio
    apart = ", ".join(str(q) for q in massive)
    n_left = int(big.sum())
    several = len(massive) > 1
    steps_words = (f"Centroid steps: positions {apart} are each their own series; the other "
                   "positions' centroid leaves them out." if several else
                   "Centroid steps: position 0 is its own series; the other positions' centroid "
                   "leaves it out.")
    gone = ["position 0"] if first else []
    if n_left:
        gone.append(f"{n_left:,} of {len(norms):,} sampled states above {outliers.FACTOR:g}x "
                    f"their capture point's median norm "
                    f"({outliers.position_counts(massive_rows['position'].to_numpy())})")
    note = steps_words + (f" Left out of the pictures: {' and '.join(gone)}." if gone
                          else " Nothing is left out of the pictures.")
    return Result(
        metrics={
            "evr_pc1": float(evr[0]),
            "evr_pc2": float(evr[1]),
            "evr_top10": float(evr[:10].sum()),
            "centroid_step_mean": float(np.nanmean([row["cosine_distance"] for row in others]))
            if others else float("nan"),
            "centroid_step_max_block": top(others),
            "pos0_step_max_block": top(zero),
            "massive_points_left_out": float(big.sum()),
        },
        tables=tables,
        facts={"evr": [float(evr[0]), float(evr[1])], "total_tokens": int(cov.state["n"]),
               "n_blocks": ctx.n_blocks, "factor": outliers.FACTOR,
               "cov_every": int(ctx.capture.cov_every), "cov_matmul": ctx.cov_matmul,
               "sampled_points": int(len(norms)),
               "massive": {"points": int(big.sum()),
                           "where": outliers.position_counts(massive_rows["position"].to_numpy())},
               "mean_massive": left, "massive_positions": massive},
        notes=[note])


POINT_TIP = ch.tip("capture_point", "capture point", numeric=False)


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(capture_point=df["point"].map(ch.point_words))
    if "token" in df:
        df["token"] = df["token"].map(ch.visible_token)
    return df


def _scatter(df: pd.DataFrame, tips: list[Any], n_blocks: int) -> Any:
    chart = ch.scatter_by_block(df, "pc1:Q", "pc2:Q", [*tips, ch.tip("pc1"), ch.tip("pc2")])
    return ch.block_slider(chart, df, "pc1:Q", "pc2:Q", list(range(-1, n_blocks + 1)),
                           label="block (−1: embedding)").properties(width=440, height=440)


def _clipped(df: pd.DataFrame) -> str:
    return ch.clipped_line(ch.clip(df, ["pc1", "pc2"],
                                   {f: ch.robust_domain(df[f]) for f in ("pc1", "pc2")}))


def _left_out(f: dict) -> str:
    m = f["massive"]
    if not m["points"]:
        return "position 0 left out; no massive-norm state in the sample"
    return f"position 0 and {m['points']:,} massive-norm states left out ({m['where']})"


def charts(r: Result, view: ChartView) -> dict[str, object]:
    f = r.facts
    e1, e2 = f["evr"]
    n = f.get("n_blocks") or int(r.frame("pca_unit")["block"].max())
    fit = pca.fitted_on(f, "tokens' unit vectors")
    fitted = (f"{fit}, tokens above {f.get('factor', outliers.FACTOR):g}x their site's median "
              f"norm left out; explained variance {e1:.1%}, {e2:.1%}")
    full = r.frame("pca_unit")
    df = _shown(full.iloc[ch.sample_rows(len(full), view.max_chart_points)])
    tips = [POINT_TIP, ch.tip("block"), ch.tip("position", "sequence position"),
            ch.tip("sample"), ch.tip("token", numeric=False)]
    out: dict[str, object] = {"pca_unit": ch.titled(
        _scatter(df, tips, n), "Residual states of every block, PCA on unit vectors",
        [f"{ch.shown_line(len(df), len(full))} (a seeded sample); {_left_out(f)}", fitted,
         _clipped(df)])}
    for key, label, axis in VARIANTS:
        sdf = r.frame(f"pca_{key}")
        keep = ch.spread_rows(len(sdf), view.max_chart_points, view.seed)
        shown = _shown(sdf.iloc[keep])
        gone = f["mean_massive"][key]
        what = ("position 0 left out of the averages" if axis == "sample" else
                f"position 0 and {gone['slots']:,} massive-norm means left out "
                f"({_positions(gone['positions'])})" if gone["slots"]
                else "position 0 left out; no massive-norm mean")
        axis_tip = (ch.tip("position", "sequence position") if axis == "position"
                    else ch.tip("sample"))
        out[f"pca_{key}"] = ch.titled(
            _scatter(shown, [POINT_TIP, ch.tip("block"), axis_tip], n),
            f"Residual states {label}, in the same PCA plane",
            [f"{ch.shown_line(len(shown), len(sdf))}; {what}", _clipped(shown)])
    out["centroid_step"] = _steps_chart(r)
    return out


def _positions(positions: list[int]) -> str:
    """'position 1', 'positions 1, 5, 9'."""
    shown = ", ".join(map(str, positions[:8])) + (" ..." if len(positions) > 8 else "")
    return f"position{'s' * (len(positions) != 1)} {shown}"


def _steps_chart(r: Result) -> Any:
    import altair as alt

    steps = r.frame("centroid_steps")
    cols = ["block", "series", "cosine_distance", "l2_distance", "centroid_norm"]
    steps = steps[cols] if len(steps) else pd.DataFrame(columns=cols)
    steps = steps[steps["cosine_distance"] > 0]
    order = [OTHERS, *sorted({s for s in steps["series"] if s != OTHERS},
                             key=lambda s: int(s.split()[-1]))]
    x = alt.X("block:Q", title="block (the step into it; block 0: from the embedding)",
              axis=alt.Axis(format="d", tickMinStep=1))
    tips = [ch.typed_tip("series:N", "positions"), ch.typed_tip("block:Q"),
            ch.typed_tip("cosine_distance:Q", "cosine distance"),
            ch.typed_tip("l2_distance:Q", "L2 distance"),
            ch.typed_tip("centroid_norm:Q", "centroid norm")]
    color = alt.Color("series:N", title="positions", sort=order,
                      scale=alt.Scale(range=["#08306b", "#e6550d", "#9e9ac8", "#31a354"]))

    def panel(field: str, title: str, height: int) -> alt.Chart:
        return alt.Chart().mark_line(point=alt.OverlayMarkDef(size=18)).encode(
            x=x, y=alt.Y(f"{field}:Q", title=title, scale=alt.Scale(type="log"),
                         axis=alt.Axis(format="~g")),
            color=color, tooltip=tips).properties(width=560, height=height)

    chart = alt.vconcat(
        panel("cosine_distance", "cosine distance to the previous centroid (log)", 240),
        panel("l2_distance", "L2 distance to the previous centroid (log)", 180),
        data=steps)
    others = steps[(steps.series == OTHERS) & (steps.block >= 1)]
    zero = steps[(steps.series == "position 0") & (steps.block >= 1)]
    words = ["position 0's mean state is its own series; the other positions' centroid leaves "
             "it out" + (f" (and positions {', '.join(order[2:])})" if len(order) > 2 else "")]
    if len(others) and len(zero):
        bo = others.loc[others.cosine_distance.idxmax()]
        bz = zero.loc[zero.cosine_distance.idxmax()]
        words.append(f"largest step after block 0, other positions: block {int(bo.block)} "
                     f"({bo.cosine_distance:.3g}, centroid norm {bo.centroid_norm:,.0f} after "
                     f"it); position 0: block {int(bz.block)} ({bz.cosine_distance:.3g}, its "
                     f"norm {bz.centroid_norm:,.0f} after it)")
    return ch.titled(chart, "How far each block moves the residual centroid, position 0 apart",
                     words)


def _steps(r: Result) -> list[dict[str, Any]]:
    return [{"block": q["block"], "value": q["cosine_distance"], "series": q["series"]}
            for q in r.tables.get("centroid_steps", [])
            if q["series"] in (OTHERS, "position 0") and q["cosine_distance"] > 0]


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
        "evr_pc1": "variance of unit residual states explained by PC1 (massive tokens left out)",
        "evr_pc2": "variance explained by PC2",
        "evr_top10": "variance explained by the top 10 components",
        "centroid_step_mean": "mean cosine distance between consecutive block centroids, "
                              "position 0 and other massive positions left out",
        "centroid_step_max_block": "block that moves that centroid the most (blocks 1 and "
                                   "later: the step from the embedding into block 0 is always "
                                   "large)",
        "pos0_step_max_block": "block (1 or later) that moves position 0's mean state the most",
        "massive_points_left_out": "sampled states above 4x their capture point's median norm, "
                                   "left out of the pictures",
    },
    tables=("centroid_steps", "massive_points"),
    paper_figures={"pca_unit": "Layerwise evolution: all residual states, PCA 2-D on unit vectors, shaded by block", "pca_by_position": "Layerwise evolution: residual states averaged over samples", "pca_by_sample": "Layerwise evolution: residual states averaged over positions"},  # noqa: E501
    comparisons=(Comparison("centroid_step", "Layerwise: cosine step of the residual centroid "
                            "per block, position 0 apart", "cosine distance to the previous "
                            "centroid", _steps, log_y=True),),
)
