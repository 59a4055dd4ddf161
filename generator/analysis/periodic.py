"""Shared by `positions` and `pos_embed`: PCA of one vector per position, with frequencies.

Each component's dominant frequency over position is what makes a helix a helix: components
that oscillate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from generator import charts, pca
from generator.experiments import Output


def dominant_frequency(curve: np.ndarray) -> tuple[float, float]:
    """(cycles over the window, share of spectral power at that frequency), DC excluded."""
    c = np.asarray(curve, np.float64) - np.mean(curve)
    power = np.abs(np.fft.rfft(c)) ** 2
    if len(power) < 2 or power[1:].sum() == 0:
        return 0.0, 0.0
    k = int(np.argmax(power[1:])) + 1
    return float(k), float(power[k] / power[1:].sum())


def analyse(vectors: np.ndarray, positions: np.ndarray, k: int, label: str, out: Output,
            prefix: str, subtitle: list[str], cap: int, seed: int) -> None:
    """Fit PCA, chart component pairs and curves, record EVR and frequency per component.

    PCA and frequencies use every position; the pair scatter draws at most `cap` of them.
    """
    k = min(k, vectors.shape[0] - 1, vectors.shape[1])
    fit = pca.fit(vectors, k)
    xy = fit.transform(vectors)
    df = pd.DataFrame({f"pc{i + 1}": xy[:, i] for i in range(k)})
    df["position"] = positions
    rows = []
    for i in range(k):
        cycles, share = dominant_frequency(xy[:, i])
        rows.append({"component": i + 1, "explained_variance_ratio":
                     float(fit.explained_variance_ratio[i]), "dominant_cycles": cycles,
                     "period_tokens": float(len(positions) / cycles) if cycles else float("nan"),
                     "power_share": share})
        out.metrics[f"{prefix}_evr_pc{i + 1}"] = (float(fit.explained_variance_ratio[i]),
                                                  f"variance explained by component {i + 1}")
        out.metrics[f"{prefix}_cycles_pc{i + 1}"] = (
            cycles, f"dominant frequency of component {i + 1} over position, in cycles over "
                    f"the {len(positions)} positions")
    out.metrics[f"{prefix}_periodicity"] = (
        float(np.mean([r["power_share"] for r in rows[:4]])),
        "mean share of spectral power at the dominant frequency, first 4 components "
        "(1 = pure sinusoid, near 0 = no periodic structure)")
    out.tables[f"{prefix}_components"] = rows
    shown = charts.spread_rows(len(df), cap, seed)
    out.charts[f"{prefix}_pairs"] = charts.titled(
        charts.component_pairs(df.iloc[shown], k - k % 2),
        f"{label}: component pairs colored by position",
        [*subtitle, charts.shown_line(len(shown), len(df))])
    curves = df.melt(id_vars=["position"], var_name="component", value_name="value")
    out.charts[f"{prefix}_curves"] = charts.titled(
        charts.line(curves, "position:Q", "value:Q", color="component",
                    tooltip=["position", "component", "value"]),
        f"{label}: each component over position", subtitle)
