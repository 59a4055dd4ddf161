"""Shared by `positions` and `pos_embed`: PCA of one vector per position, with frequencies.

Each component's dominant frequency over position is what makes a helix a helix: components
that oscillate. `analyse` is the compute part (numbers and tables into a `Result`, every
position it is given kept); `charts` draws them again from the stored tables alone, thinning
the rows it draws to the view's cap.

Positions left out by the caller (massive-norm positions) leave gaps: the PCA is fitted on the
positions given, and each component's spectrum is taken over the whole span of positions with
the gaps filled by linear interpolation between their neighbours, so the frequency scale is the
same with or without them. Each component also records the largest share of its variance that
one position carries: near 1/N when the component is spread over the positions, near 1 when one
point alone decides it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from generator import charts as ch
from generator.analysis import pca
from generator.experiment import ChartView, Result

METRIC_COMPONENTS = 6
"""Components that get their own `*_evr_pcN` / `*_cycles_pcN` metrics (the table keeps all)."""
PERIODICITY_COMPONENTS = 4
"""Components averaged into `*_periodicity`."""


def dominant_frequency(curve: np.ndarray) -> tuple[float, float]:
    """(cycles over the window, share of spectral power at that frequency), DC excluded."""
    c = np.asarray(curve, np.float64) - np.mean(curve)
    power = np.abs(np.fft.rfft(c)) ** 2
    if len(power) < 2 or power[1:].sum() == 0:
        return 0.0, 0.0
    k = int(np.argmax(power[1:])) + 1
    return float(k), float(power[k] / power[1:].sum())


def on_grid(curve: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`curve` (sampled at increasing `positions`) on every integer position from first to last.

    Missing positions are linearly interpolated between their neighbours.
    """
    positions = np.asarray(positions)
    if len(positions) < 2 or positions[-1] - positions[0] + 1 == len(positions):
        return np.asarray(curve, np.float64)
    grid = np.arange(positions[0], positions[-1] + 1)
    return np.interp(grid, positions, np.asarray(curve, np.float64))


def top_share(scores: np.ndarray) -> tuple[float, int]:
    """(largest share of a component's variance from one row, that row's index)."""
    sq = (np.asarray(scores, np.float64) - np.mean(scores)) ** 2
    total = sq.sum()
    if total <= 0:
        return 0.0, 0
    i = int(np.argmax(sq))
    return float(sq[i] / total), i


def metric_meanings(prefix: str, what: str) -> dict[str, str]:
    """What `analyse(..., prefix)` can put in `metrics`, with its meaning (for `Experiment.metrics`)."""
    out: dict[str, str] = {}
    for i in range(1, METRIC_COMPONENTS + 1):
        out[f"{prefix}_evr_pc{i}"] = f"variance of the {what} explained by component {i}"
        out[f"{prefix}_cycles_pc{i}"] = (f"dominant frequency of component {i} of the {what} "
                                         "over position, in cycles over the positions analysed")
    out[f"{prefix}_pc1_top_share"] = (
        f"largest share of component 1's variance carried by a single position of the {what} "
        "(near 1/positions when spread, near 1 when one point decides the component)")
    out[f"{prefix}_periodicity"] = (
        f"mean share of spectral power at the dominant frequency, first "
        f"{PERIODICITY_COMPONENTS} components of the {what} (1 = pure sinusoid, near 0 = no "
        "periodic structure)")
    return out


def analyse(into: Result, prefix: str, vectors: np.ndarray, positions: np.ndarray,
            k: int) -> None:
    """Fit PCA on one vector per position; record EVR and frequency per component into `into`.

    Tables: `{prefix}_components` (one row per component) and `{prefix}_by_position` (every
    position projected on the components: what the charts draw).
    """
    vectors = np.asarray(vectors, np.float64)
    k = min(k, vectors.shape[0] - 1, vectors.shape[1])
    fit = pca.fit(vectors, k)
    xy = fit.transform(vectors)
    positions = np.asarray(positions)
    span = int(positions[-1] - positions[0] + 1) if len(positions) else 0
    rows = []
    for i in range(k):
        cycles, share = dominant_frequency(on_grid(xy[:, i], positions))
        evr = float(fit.explained_variance_ratio[i])
        top, at = top_share(xy[:, i])
        rows.append({"component": i + 1, "explained_variance_ratio": evr,
                     "dominant_cycles": cycles,
                     "period_tokens": float(span / cycles) if cycles else float("nan"),
                     "power_share": share, "top_position_share": top,
                     "top_position": int(positions[at])})
        if i < METRIC_COMPONENTS:
            into.metrics[f"{prefix}_evr_pc{i + 1}"] = evr
            into.metrics[f"{prefix}_cycles_pc{i + 1}"] = cycles
        if i == 0:
            into.metrics[f"{prefix}_pc1_top_share"] = top
    into.metrics[f"{prefix}_periodicity"] = float(
        np.mean([r["power_share"] for r in rows[:PERIODICITY_COMPONENTS]]))
    into.tables[f"{prefix}_components"] = rows
    into.tables[f"{prefix}_by_position"] = [
        {"position": int(pos), **{f"pc{i + 1}": float(xy[j, i]) for i in range(k)}}
        for j, pos in enumerate(positions)]


def charts(r: Result, view: ChartView, prefix: str, label: str,
           subtitle: list[str]) -> dict[str, Any]:
    """`{prefix}_pairs` and `{prefix}_curves` from the stored `{prefix}_by_position` table.

    Pairs: each pair of components as a path through the positions in order, coloured by
    position, first and last position marked. Curves: each component's score over position, one
    small panel per component (their scales differ by orders of magnitude). Both use robust
    axis domains; a point beyond them is drawn at the edge as a cross and counted in the
    subtitle.
    """
    import altair as alt

    def _component_label(i: int, row: dict | None) -> str:
        """'PC 1 · 42% of variance · 3 cycles (period 42 tokens)'."""
        if not row:
            return f"PC {i}"
        cyc = row.get("dominant_cycles") or 0
        period = row.get("period_tokens")
        freq = (f"{cyc:g} cycle{'s' if cyc != 1 else ''}" + (
            f" (period {period:,.3g} tokens)" if period and np.isfinite(period) else "")
                if cyc else "no dominant frequency")
        return f"PC {i} · {row['explained_variance_ratio']:.1%} of variance · {freq}"

    df = r.frame(f"{prefix}_by_position")
    k = sum(1 for c in df.columns if c.startswith("pc") and c[2:].isdigit())
    shown = ch.spread_rows(len(df), view.max_chart_points, view.seed)
    drawn = df.iloc[shown].reset_index(drop=True)
    points = ch.shown_line(len(shown), len(df))
    comps = {row["component"]: row for row in r.tables.get(f"{prefix}_components", [])}
    pairs = ch.clip_pairs(drawn, k - k % 2)
    curves = drawn.melt(id_vars=["position"], value_vars=[f"pc{i + 1}" for i in range(k)],
                        var_name="component", value_name="score")
    curves["component"] = curves["component"].map(
        lambda c: _component_label(int(c[2:]), comps.get(int(c[2:]))))
    clipped = []
    for _, part in curves.groupby("component", sort=False):
        lo, hi = ch.robust_domain(part["score"], 0.005, 0.995, 0.25)
        clipped.append(ch.clip(part.rename(columns={"score": "shown"}).assign(
            score=part["score"]), ["shown"], {"shown": [lo, hi]}))
    curves = pd.concat(clipped, ignore_index=True) if clipped else curves
    order = list(dict.fromkeys(curves["component"]))
    curve_chart = alt.Chart(curves).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("position:Q", title="sequence position", axis=alt.Axis(format="d")),
        y=alt.Y("shown:Q", title="score", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=",.3~g")),
        color=alt.Color("component:N", title="component", sort=order, legend=None),
        tooltip=[ch.tip("position", "sequence position"),
                 ch.tip("component", "component", numeric=False), ch.tip("score")],
    ).properties(width=260, height=110).facet(
        facet=alt.Facet("component:N", title=None, sort=order), columns=2,
    ).resolve_scale(y="independent")
    return {
        f"{prefix}_pairs": ch.titled(
            ch.position_paths(pairs, k - k % 2),
            f"{label}: pairs of principal components, a path through the positions in order",
            [*subtitle, "grey line: positions in order; colour: sequence position (dark = "
             "early, yellow = late); ring: first position, square: last", points,
             ch.clipped_line(pairs)]),
        f"{prefix}_curves": ch.titled(
            curve_chart, f"{label}: each principal component over position",
            [*subtitle, "panel title: variance explained and dominant frequency", points,
             ch.clipped_line(curves)]),
    }
