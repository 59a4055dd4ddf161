"""Norms: how large the state is at each capture point across depth, and at each sequence position.

A handful of positions carry a norm tens to hundreds of times the typical one ("massive
activations"): position 0 above all, the paper's "huge norm at position 0". A mean over all
tokens mixes that one position into every number, so this page keeps it apart everywhere.

The first chart shows, per block, the typical norm of every capture point (the median over
positions 1 and later of each position's mean norm) with position 0 of the residual stream drawn
as its own dashed line: the typical residual grows steadily with depth, while position 0 jumps
on its own. The second shows, per block, position 0's norm over the median position's, with the
claim's threshold and the middle blocks shaded, beside the same ratio for the largest and the
95th-percentile other position (the baseline: what an ordinary position reaches). The third
shows the mean norm per position over the middle blocks, with the massive positions marked; the
table lists them, with the block where each first becomes massive.

The claim reads the per-block ratio in the median middle block, and says in how many middle
blocks and from which block it holds. A position is massive when its mean norm is more than 4x
the median position's (`generator/analysis/outliers.py`); the positions page leaves the same
positions out of its PCA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.analysis import outliers
from generator.capture.sites import ALL_POINTS, all_sites, middle_blocks
from generator.experiment import (
    ChartView,
    Claim,
    Comparison,
    Context,
    Experiment,
    Headline,
    Needs,
    Result,
)

if TYPE_CHECKING:
    import altair as alt

    from generator.reducers.norms import NormStats


@dataclass(frozen=True)
class Params:
    middle_fraction: float = 0.6
    """Share of depth, centered, that counts as the middle blocks."""
    point: str = "resid_mlp"
    """Capture point whose per-position norm is reported."""


BASELINE_QUANTILE = 0.95
"""The baseline position: this quantile of the other positions' ratios (an ordinary position)."""


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.norms import NormStats

    sites = [s for s in all_sites(ctx.n_blocks) if s.point not in ctx.absent_points]
    return {"text": {"norms": NormStats(sites, ctx.seq_len["text"])}}


def pos0_ratio(mean_pos: np.ndarray) -> float:
    """Position-0 norm over the median of the other positions (NaN when there are none)."""
    rest = mean_pos[1:][np.isfinite(mean_pos[1:]) & (mean_pos[1:] > 0)]
    return float(mean_pos[0] / np.median(rest)) if len(rest) else float("nan")


def block_row(block: int, row: np.ndarray) -> dict[str, float | int]:
    """Position 0 against the other positions of one block: its ratio, and the baseline."""
    other = row[1:]
    ok = np.isfinite(other) & (other > 0)
    if not ok.any():
        nan = float("nan")
        return {"block": block, "pos0_norm": float(row[0]), "median_other_norm": nan,
                "ratio": nan, "p95_other_ratio": nan, "max_other_ratio": nan,
                "max_other_position": -1}
    med = float(np.median(other[ok]))
    rel = other[ok] / med
    top = int(np.argmax(rel))
    return {"block": block, "pos0_norm": float(row[0]), "median_other_norm": med,
            "ratio": float(row[0] / med),
            "p95_other_ratio": float(np.quantile(rel, BASELINE_QUANTILE)),
            "max_other_ratio": float(rel[top]),
            "max_other_position": int(np.flatnonzero(ok)[top] + 1)}


def run_from(flags: list[bool]) -> int | None:
    """Index where the final run of True values starts (None when the last value is False)."""
    if not flags or not flags[-1]:
        return None
    i = len(flags) - 1
    while i > 0 and flags[i - 1]:
        i -= 1
    return i


def spans(blocks: list[int]) -> str:
    """[2, 11, 12, 13] -> '2, 11-13'."""
    out: list[str] = []
    for b in blocks:
        if out and b == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{b}"
        else:
            out.append(str(b))
    return ", ".join(out)


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    ns: NormStats = stats["text"]["norms"]
    st, var, mean_pos = ns.arrays(), ns.variance(), ns.mean_pos()
    by_site = []
    for i, s in enumerate(ns.sites):
        other = mean_pos[i, 1:]
        other = other[np.isfinite(other)]
        by_site.append({"point": s.point, "block": s.block, "depth": s.depth,
                        "mean_norm": float(st["mean"][i]), "std_norm": float(np.sqrt(var[i])),
                        "pos0_norm": float(mean_pos[i, 0]),
                        "median_other_norm": float(np.median(other)) if len(other) else np.nan,
                        "tokens": int(st["n"][i])})
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    blocks = [b for b in range(ctx.n_blocks) if (p.point, b) in ns.index]
    rows = {b: mean_pos[ns.index[(p.point, b)]] for b in blocks}
    per_block = [block_row(b, rows[b]) for b in blocks]
    mid_rows = [r for r in per_block if r["block"] in mids]
    idx = [ns.index[(p.point, b)] for b in mids if (p.point, b) in ns.index]

    # Massive positions: detected on the middle blocks pooled (the profile the positions page
    # averages), then followed block by block to say where each one starts.
    pooled = outliers.pooled_norm_by_position(st["sum_pos"][idx], st["n_pos"][idx])
    rel = outliers.times_median(pooled)
    massive = outliers.massive_positions(pooled)
    per_block_massive = {b: outliers.massive(rows[b]) for b in blocks}
    massive_rows = []
    for q in massive:
        flags = [bool(per_block_massive[b][q]) for b in blocks]
        norms_q = np.array([rows[b][q] for b in blocks])
        peak = int(np.nanargmax(norms_q)) if np.isfinite(norms_q).any() else 0
        start = run_from([f for b, f in zip(blocks, flags, strict=True) if b <= mids[-1]])
        massive_rows.append({
            "position": q, "mean_norm": float(pooled[q]), "times_median": float(rel[q]),
            "first_block": blocks[flags.index(True)] if any(flags) else -1,
            "massive_from_block": blocks[start] if start is not None else -1,
            "middle_blocks_massive": int(sum(f for b, f in zip(blocks, flags, strict=True)
                                             if b in mids)),
            "peak_norm": float(norms_q[peak])})
    pos0_flags = [bool(per_block_massive[b][0]) for b in blocks if b <= mids[-1]]
    pos0_from = run_from(pos0_flags)
    mid_massive = [bool(per_block_massive[b][0]) for b in mids if b in per_block_massive]

    resid = [r["median_other_norm"] for r in by_site if r["point"] == p.point]
    mid_ratio = np.array([r["ratio"] for r in mid_rows], np.float64)
    return Result(
        metrics={
            "pos0_norm_ratio": pos0_ratio(pooled),
            "pos0_norm_ratio_median_middle": float(np.nanmedian(mid_ratio)),
            "pos0_norm_ratio_min_middle": float(np.nanmin(mid_ratio)),
            "pos0_baseline_ratio_middle": float(np.nanmedian([r["p95_other_ratio"]
                                                              for r in mid_rows])),
            "pos0_massive_fraction_middle": float(np.mean(mid_massive)) if mid_massive
            else float("nan"),
            "pos0_massive_from_block": float(blocks[pos0_from]) if pos0_from is not None
            else float("nan"),
            "massive_positions": float(len(massive)),
            "final_over_embed_norm": float(by_site[-1]["mean_norm"] / by_site[0]["mean_norm"]),
            "typical_resid_growth": float(resid[-1] / resid[0]) if resid else float("nan"),
        },
        tables={"norm_by_site": by_site, "pos0_ratio_by_block": per_block,
                "massive_positions": massive_rows,
                "norm_by_position": [
                    {"position": i, "mean_norm": float(v), "times_median": float(rel[i]),
                     "massive": i in massive} for i, v in enumerate(pooled)]},
        facts={"middle_blocks": [mids[0], mids[-1]], "point": p.point,
               "massive_positions": massive, "factor": outliers.FACTOR,
               "n_positions": int(mean_pos.shape[1])})


def _num(v: float) -> str:
    """A norm or ratio for a subtitle: 25,102, 98.3, 1.1."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def pos0_where(r: Result, t: float) -> str:
    """Where the position-0 claim holds at threshold `t`, in words.

    The middle blocks at or above it, the first such block, blocks outside the middle range
    that reach it, and the baseline (what an ordinary position reaches).
    """
    rows = [row for row in r.tables.get("pos0_ratio_by_block", [])
            if row["ratio"] is not None and np.isfinite(row["ratio"])]
    first, last = r.facts["middle_blocks"]
    mid = [row for row in rows if first <= row["block"] <= last]
    if not mid:
        return ""
    above = [row["block"] for row in mid if row["ratio"] >= t]
    text = (f"{len(above)} of {len(mid)} middle blocks ({first}-{last}, "
            f"{len(above) / len(mid):.0%}) reach {t:g}x")
    if above:
        text += f": blocks {spans(above)} (first: block {above[0]})"
    outside = [row["block"] for row in rows if not first <= row["block"] <= last
               and row["ratio"] >= t]
    if outside:
        text += f"; outside them, blocks {spans(outside)}"
    base = np.median([row["p95_other_ratio"] for row in mid])
    top = max(mid, key=lambda row: row["max_other_ratio"])
    return (text + f". Baseline: an ordinary position (95th percentile of the others) reaches "
            f"{base:.2f}x; the largest other position, {top['max_other_position']}, "
            f"{_num(top['max_other_ratio'])}x (block {top['block']})")


CLAIM = Claim("pos0_norm_ratio_median_middle", "pos0_norm_ratio_min", 10.0,
              "position 0's norm is at least {t:g}x the median position's in the median middle "
              "block", where=pos0_where)


def charts(r: Result, view: ChartView) -> dict[str, object]:
    """The three charts, from the stored tables (helpers nested: drawing never reruns compute)."""
    import altair as alt
    import pandas as pd

    def _depth_chart(r: Result) -> alt.TopLevelMixin:
        point, n_pos = r.facts["point"], r.facts.get("n_positions", 0)
        depth = r.frame("norm_by_site")
        depth = depth[depth.point.isin(ALL_POINTS)]
        typical = depth.assign(series="median position", norm=depth["median_other_norm"])
        own = depth[depth.point == point]
        zero = own.assign(series="position 0", norm=own["pos0_norm"])
        data = pd.concat([typical, zero], ignore_index=True)[
            ["point", "block", "series", "norm", "tokens"]]
        data = data[np.isfinite(data["norm"]) & (data["norm"] > 0)]
        n_blocks = int(depth.block.max())
        lines = [f"solid: each capture point's median over positions 1-{n_pos - 1} of the mean norm; "
                 f"dashed: position 0 of {point}"]
        if len(own) > 2:
            mid = own[(own.block >= 0) & (own.block < n_blocks)]
            typ, zer = mid["median_other_norm"].to_numpy(), mid["pos0_norm"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                steps = zer[1:] / zer[:-1]
            jump = int(np.nanargmax(steps)) + 1 if np.isfinite(steps).any() else 0
            lines.append(f"the median {point} norm grows from {_num(typ[0])} (block 0) to "
                         f"{_num(typ[-1])} (block {len(typ) - 1}); position 0 goes from "
                         f"{_num(zer[jump - 1])} to {_num(zer[jump])} at block {jump}")
        chart = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
            x=alt.X("block:Q", title=f"block (embedding at −1, final norm at {n_blocks})",
                    axis=alt.Axis(format="d", tickMinStep=1),
                    scale=alt.Scale(domain=[-1.5, n_blocks + 0.5], nice=False)),
            y=alt.Y("norm:Q", title="mean L2 norm (log scale)", scale=alt.Scale(type="log"),
                    axis=alt.Axis(format=",~r")),
            color=alt.Color("point:N", title="capture point", sort=list(ALL_POINTS)),
            strokeDash=alt.StrokeDash("series:N", title="positions",
                                      sort=["median position", "position 0"],
                                      legend=None),  # the subtitle says solid / dashed
            tooltip=[ch.typed_tip("point:N", "capture point"),
                     ch.typed_tip("series:N", "positions"), ch.typed_tip("block:Q"),
                     ch.typed_tip("norm:Q", "mean L2 norm"), ch.typed_tip("tokens:Q", "tokens seen")],
        ).properties(width=560, height=300)
        return ch.titled(chart, "Norm of every capture point across depth, position 0 apart", lines)


    def _ratio_chart(r: Result, t: float) -> alt.TopLevelMixin:
        first, last = r.facts["middle_blocks"]
        per = r.frame("pos0_ratio_by_block")
        series = {"ratio": "position 0", "max_other_ratio": "largest other position",
                  "p95_other_ratio": "95th-percentile other position"}
        data = pd.concat([per.assign(series=name, value=per[col]) for col, name in series.items()],
                         ignore_index=True)[["block", "series", "value", "max_other_position",
                                             "pos0_norm", "median_other_norm"]]
        data = data[np.isfinite(data["value"]) & (data["value"] > 0)]
        y_title = "norm / median position's norm (log scale)"
        n_blocks = int(per["block"].max()) + 1 if len(per) else 1
        lines = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=22)).encode(
            x=alt.X("block:Q", title="block", axis=alt.Axis(format="d", tickMinStep=1),
                    scale=alt.Scale(domain=[-0.5, n_blocks - 0.5], nice=False)),
            y=alt.Y("value:Q", title=y_title,
                    scale=alt.Scale(type="log"), axis=alt.Axis(format=",~r")),
            color=alt.Color("series:N", title="which position", sort=list(series.values()),
                            scale=alt.Scale(range=["#08306b", "#e6550d", "#9e9ac8"])),
            tooltip=[ch.typed_tip("series:N", "position"), ch.typed_tip("block:Q"),
                     ch.typed_tip("value:Q", "times the median position"),
                     ch.typed_tip("max_other_position:Q", "largest other position"),
                     ch.typed_tip("pos0_norm:Q", "position-0 norm"),
                     ch.typed_tip("median_other_norm:Q", "median position's norm")])
        chart = alt.layer(ch.shade_blocks(first, last), lines,
                          ch.threshold_rule(t, f"claim threshold {t:g}x", y_title),
                          data=data).properties(width=560, height=280)
        words = pos0_where(r, t)
        return ch.titled(chart, "Position-0 norm over the median position's, per block",
                         [words.split(". Baseline")[0], "shaded: middle blocks; dashed: the claim's "
                          "threshold"])


    def _position_chart(r: Result) -> alt.TopLevelMixin:
        first, last = r.facts["middle_blocks"]
        df = r.frame("norm_by_position")
        df = df[np.isfinite(df["mean_norm"]) & (df["mean_norm"] > 0)].assign(
            label=lambda d: d["position"].map(lambda q: f"position {q}"))
        enc = {"x": alt.X("position:Q", title="sequence position", axis=alt.Axis(format="d")),
               "y": alt.Y("mean_norm:Q",
                          title=f"mean L2 norm, {ch.point_words(r.facts['point'])} (log scale)",
                          scale=alt.Scale(type="log"), axis=alt.Axis(format=",~r"))}
        tips = [ch.typed_tip("position:Q", "sequence position"), ch.typed_tip("mean_norm:Q", "mean L2 norm"),
                ch.typed_tip("times_median:Q", "times the median position")]
        line = alt.Chart().mark_line(color="#4c78a8", point=alt.OverlayMarkDef(size=14)).encode(
            **enc, tooltip=tips)
        hot = alt.Chart().transform_filter("datum.massive").encode(**enc)
        marks = hot.mark_point(size=90, color="#c0392b", filled=True).encode(tooltip=tips)
        text = hot.mark_text(align="left", dx=7, dy=-6, color="#c0392b").encode(text="label:N")
        chart = alt.layer(line, marks, text, data=df).properties(width=560, height=280)
        massive = [row for _, row in df[df["massive"]].iterrows()]
        named = ", ".join(f"{int(q['position'])} ({_num(q['mean_norm'])}, {_num(q['times_median'])}x)"
                          for q in massive[:6])
        factor = r.facts.get("factor", outliers.FACTOR)
        return ch.titled(chart, f"Mean norm per sequence position, middle blocks {first}-{last}",
                         [f"red: massive positions (above {factor:g}x the median position): {named}"
                          if massive else f"no position is above {factor:g}x the median position"])

    thresholds = getattr(view, "thresholds", None) or {}
    t = float(thresholds.get(CLAIM.threshold, CLAIM.default))
    return {"norm_by_depth": _depth_chart(r), "pos0_ratio_by_block": _ratio_chart(r, t),
            "norm_by_position": _position_chart(r)}


def _ratio_rows(r: Result) -> list[dict[str, object]]:
    """Per block: position 0's ratio and the baseline's, for the Compare page."""
    out: list[dict[str, object]] = []
    for row in r.tables.get("pos0_ratio_by_block", []):
        for field, series in (("ratio", "position 0"),
                              ("p95_other_ratio", "95th-percentile other position")):
            v = row.get(field)
            if v is not None and np.isfinite(v) and v > 0:
                out.append({"block": row["block"], "value": v, "series": series})
    return out


def _growth_rows(r: Result) -> list[dict[str, object]]:
    """Per block: the residual's norm over the embedding's, position 0 apart from the others.

    Relative to the embedding, so models whose embeddings differ in scale share one axis.
    """
    rows = [x for x in r.tables.get("norm_by_site", []) if x["point"] in ("embed", "resid_mlp")]
    base = next((x for x in rows if x["point"] == "embed"), None)
    out: list[dict[str, object]] = []
    if base is None:
        return out
    for x in rows:
        if x["point"] != "resid_mlp":
            continue
        for field, series in (("median_other_norm", "other positions (median)"),
                              ("pos0_norm", "position 0")):
            v, b = x.get(field), base.get(field)
            if v is not None and b and np.isfinite(v) and v > 0:
                out.append({"block": x["block"], "value": v / b, "series": series})
    return out


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
        "pos0_norm_ratio_median_middle": "position-0 mean norm over the median position's, per "
                                         "middle block; the median over the middle blocks",
        "pos0_norm_ratio_min_middle": "smallest per-block position-0 ratio in the middle blocks",
        "pos0_baseline_ratio_middle": "the same ratio for an ordinary position (95th percentile "
                                      "of positions 1 and later), median over the middle blocks: "
                                      "what the position-0 ratio is compared with",
        "pos0_massive_fraction_middle": "share of the middle blocks where position 0 is massive "
                                        f"(above {outliers.FACTOR:g}x the median position)",
        "pos0_massive_from_block": "first block from which position 0 is massive in every block "
                                   "through the last middle block",
        "massive_positions": "positions whose mean norm over the middle blocks is above "
                             f"{outliers.FACTOR:g}x the median position's (see the massive "
                             "positions table)",
        "pos0_norm_ratio": "position-0 mean norm over the median of the other positions, middle "
                           "blocks pooled into one profile (hides where it holds: see the "
                           "per-block numbers)",
        "final_over_embed_norm": "mean norm after the final norm over the initial embedding",
        "typical_resid_growth": "median position's residual norm in the last block over block 0",
    },
    headlines=(Headline("pos0_norm_ratio_median_middle",
                        "position-0 norm ratio (median middle block)"),),
    claims=(CLAIM,),
    tables=("massive_positions", "pos0_ratio_by_block", "norm_by_site"),
    comparisons=(Comparison("pos0_ratio", "Norms: position-0 norm over the median "
                            "position's, per block", "norm / median position's norm",
                            _ratio_rows, log_y=True),
                 Comparison("resid_growth", "Norms: residual norm growth, position 0 apart",
                            "residual norm / embedding norm", _growth_rows, log_y=True)),
    paper_figures={"norm_by_depth": "Norms: mean norm by state across depth", "norm_by_position": "Norms: mean norm by sequence position (log scale), the large norm at position 0"},  # noqa: E501
)
