"""Shared by `positions` and `pos_embed`: PCA of one vector per position, with frequencies.

Each component's dominant frequency over position is what makes a helix a helix: components
that oscillate. `analyse` is the compute part (numbers and tables into a `Result`, every
position kept); `charts` draws them again from the stored tables alone, thinning the rows it
draws to the view's cap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def metric_meanings(prefix: str, what: str) -> dict[str, str]:
    """What `analyse(..., prefix)` can put in `metrics`, with its meaning (for `Experiment.metrics`)."""
    out: dict[str, str] = {}
    for i in range(1, METRIC_COMPONENTS + 1):
        out[f"{prefix}_evr_pc{i}"] = f"variance of the {what} explained by component {i}"
        out[f"{prefix}_cycles_pc{i}"] = (f"dominant frequency of component {i} of the {what} "
                                         "over position, in cycles over the positions analysed")
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
    rows = []
    for i in range(k):
        cycles, share = dominant_frequency(xy[:, i])
        evr = float(fit.explained_variance_ratio[i])
        rows.append({"component": i + 1, "explained_variance_ratio": evr,
                     "dominant_cycles": cycles,
                     "period_tokens": float(len(positions) / cycles) if cycles else float("nan"),
                     "power_share": share})
        if i < METRIC_COMPONENTS:
            into.metrics[f"{prefix}_evr_pc{i + 1}"] = evr
            into.metrics[f"{prefix}_cycles_pc{i + 1}"] = cycles
    into.metrics[f"{prefix}_periodicity"] = float(
        np.mean([r["power_share"] for r in rows[:PERIODICITY_COMPONENTS]]))
    into.tables[f"{prefix}_components"] = rows
    into.tables[f"{prefix}_by_position"] = [
        {"position": int(pos), **{f"pc{i + 1}": float(xy[j, i]) for i in range(k)}}
        for j, pos in enumerate(positions)]


def charts(r: Result, view: ChartView, prefix: str, label: str,
           subtitle: list[str]) -> dict[str, Any]:
    """`{prefix}_pairs` and `{prefix}_curves` from the stored `{prefix}_by_position` table."""
    df = r.frame(f"{prefix}_by_position")
    k = sum(1 for c in df.columns if c.startswith("pc"))
    shown = ch.spread_rows(len(df), view.max_chart_points, view.seed)
    drawn = df.iloc[shown]
    points = ch.shown_line(len(shown), len(df))
    curves = drawn.melt(id_vars=["position"], var_name="component", value_name="value")
    return {
        f"{prefix}_pairs": ch.titled(
            ch.component_pairs(drawn, k - k % 2),
            f"{label}: component pairs colored by position", [*subtitle, points]),
        f"{prefix}_curves": ch.titled(
            ch.line(curves, "position:Q", "value:Q", color="component",
                    tooltip=["position", "component", "value"]),
            f"{label}: each component over position", [*subtitle, points]),
    }
