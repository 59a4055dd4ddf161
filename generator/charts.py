"""Altair chart builders shared by the experiments; every chart carries its provenance."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

KIND_SCHEMES = {"attn": "blues", "mlp": "oranges"}
# Row caps are ours (`capture.max_chart_points`, said in each subtitle), and data is written to a
# file beside the spec, so Altair's inline-data guard does not apply.
alt.data_transformers.disable_max_rows()


def titled(chart: alt.TopLevelMixin, title: str, lines: list[str]) -> alt.TopLevelMixin:
    return chart.properties(title=alt.TitleParams(title, subtitle=lines, anchor="start"))


def shown_line(shown: int, total: int) -> str:
    return f"{shown:,} of {total:,} points shown" if shown < total else f"{total:,} points"


def scatter_by_block(df: pd.DataFrame, x: str, y: str, tooltip: list[str],
                     kind: str | None = None, size: int = 12) -> alt.TopLevelMixin:
    """Points shaded light to dark by block; with `kind`, one color family per kind."""
    base = alt.Chart(df).mark_circle(size=size, opacity=0.7).encode(
        x=alt.X(x, title=x.split(":")[0].upper()), y=alt.Y(y, title=y.split(":")[0].upper()),
        tooltip=tooltip)
    if kind is None:
        return base.encode(color=alt.Color("block:Q", scale=alt.Scale(scheme="viridis")))
    layers = [
        base.transform_filter(alt.datum[kind] == k).encode(
            color=alt.Color("block:Q", scale=alt.Scale(scheme=scheme),
                            legend=alt.Legend(title=f"{k} block")))
        for k, scheme in KIND_SCHEMES.items()
    ]
    return alt.layer(*layers).resolve_scale(color="independent")


def component_pairs(df: pd.DataFrame, n_components: int, color: str = "position",
                    tooltip: list[str] | None = None) -> alt.TopLevelMixin:
    """Scatter of PC pairs (1-2, 3-4, 5-6) colored by position: where helices show."""
    charts = []
    for a in range(0, n_components - 1, 2):
        x, y = f"pc{a + 1}", f"pc{a + 2}"
        charts.append(alt.Chart(df).mark_circle(size=18).encode(
            x=alt.X(x, title=x.upper()), y=alt.Y(y, title=y.upper()),
            color=alt.Color(f"{color}:Q", scale=alt.Scale(scheme="turbo")),
            tooltip=tooltip or [color, x, y]).properties(width=220, height=220))
    return alt.hconcat(*charts)


def line(df: pd.DataFrame, x: str, y: str, color: str | None = None, log_y: bool = False,
         tooltip: list[str] | None = None, x_title: str | None = None,
         y_title: str | None = None) -> alt.Chart:
    enc: dict[str, Any] = {
        "x": alt.X(x, title=x_title or x),
        "y": alt.Y(y, title=y_title or y, scale=alt.Scale(type="log") if log_y else alt.Undefined),
        "tooltip": tooltip or [x, y],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", sort=None)
    return alt.Chart(df).mark_line(point=True).encode(**enc).properties(width=560, height=280)


def bars(df: pd.DataFrame, x: str, y: str, x_title: str, y_title: str) -> alt.Chart:
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(x, title=x_title), y=alt.Y(y, title=y_title), tooltip=[x, y]
    ).properties(width=560, height=260)


def sample_rows(n: int, cap: int) -> np.ndarray:
    """The first `cap` rows: reservoir rows are already in random (hash) order."""
    return np.arange(min(n, cap))


def spread_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """`cap` of `n` ordered rows (mean states by site and position), drawn evenly and seeded, in order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
