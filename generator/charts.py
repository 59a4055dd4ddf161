"""Altair chart builders shared by the experiments; every chart carries its provenance.

Reading rules every chart follows (checked by tests/site/test_chart_lint.py): axes titled in
words (never a raw field such as `pc1:Q`), depth in blocks, sequential colour ramps that do not
start at white, tooltips with readable numbers (`NUM`), tokens shown visibly (`visible_token`),
and scales that one outlier cannot flatten (`robust_domain` + `clip`, clipped points marked).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

KIND_RANGES = {"attn": ["#9ecae1", "#08306b"], "mlp": ["#fdae6b", "#7f2704"]}
"""Light-to-dark ramps per component kind that start well above white: early blocks stay visible."""
KIND_WORDS = {"attn": "attention", "mlp": "MLP"}
BLOCK_RAMP = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]
"""Block colour ramp for charts without kinds (light blue to navy, never white)."""
NUM = ",.6~r"
"""d3 format for numbers read by people: 49,152 and 0.123457, never 4.915e+04 (`~g` gives
exponents from 10,000 up; `~r` rounds to 6 significant digits in plain decimals)."""
INSIDE, OUTSIDE = "inside", "outside the 1-99% range (drawn at the edge)"
# Row caps are ours (`capture.max_chart_points`, said in each subtitle), and data is written to a
# file beside the spec, so Altair's inline-data guard does not apply.
alt.data_transformers.disable_max_rows()


def visible_token(text: str) -> str:
    """A token as a reader can see it: ␣ for a space, a visible backslash-n for a newline, <0xNN> bytes.

    Many tokens are only whitespace or start with a space; shown raw they are invisible in a
    tooltip or a table.
    """
    if text == "":
        return "∅"
    special = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return "".join(special.get(c) or (f"<0x{ord(c):02X}>" if ord(c) < 32 or ord(c) == 127 else c)
                   for c in text)


def axis_words(field: str) -> str:
    """`pc1` -> `principal component 1`, `umap2` -> `UMAP dimension 2`, `mean_norm` -> `mean norm`."""
    field = field.split(":")[0]
    if field.startswith("pc") and field[2:].isdigit():
        return f"principal component {field[2:]}"
    if field.startswith("umap") and field[4:].isdigit():
        return f"UMAP dimension {field[4:]}"
    return field.replace("_", " ")


def tip(field: str, title: str | None = None, numeric: bool = True) -> alt.Tooltip:
    """A tooltip line with a word title and, for numbers, a readable format."""
    field = field.split(":")[0]
    title = title or axis_words(field)
    return alt.Tooltip(field, title=title, format=NUM) if numeric else alt.Tooltip(field, title=title)


def robust_domain(values: Any, lo_q: float = 0.01, hi_q: float = 0.99,
                  pad: float = 0.05) -> list[float]:
    """An axis domain from quantiles, so a handful of huge points cannot squash the rest."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [0.0, 1.0]
    lo, hi = (float(x) for x in np.quantile(v, [lo_q, hi_q]))
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    span = (hi - lo) or abs(hi) or 1.0
    return [lo - pad * span, hi + pad * span]


def clip(df: pd.DataFrame, fields: list[str], domains: dict[str, list[float]]) -> pd.DataFrame:
    """Clamp `fields` into their domains; a `clipped` column marks points drawn at the edge."""
    out = df.copy()
    outside = np.zeros(len(out), bool)
    for f in fields:
        lo, hi = domains[f]
        v = out[f].to_numpy(np.float64)
        outside |= (v < lo) | (v > hi)
        out[f] = np.clip(v, lo, hi)
    out["clipped"] = np.where(outside, OUTSIDE, INSIDE)
    return out


def clipped_line(df: pd.DataFrame) -> str:
    """Subtitle words for the points `clip` clamped, or '' when there are none."""
    n = int((df["clipped"] == OUTSIDE).sum()) if "clipped" in df else 0
    return f"{n:,} point(s) beyond the 1-99% range drawn at the axis edge as crosses" if n else ""


def titled(chart: alt.TopLevelMixin, title: str, lines: list[str]) -> alt.TopLevelMixin:
    return chart.properties(title=alt.TitleParams(title, subtitle=[x for x in lines if x],
                                                  anchor="start"))


def shown_line(shown: int, total: int) -> str:
    return f"{shown:,} of {total:,} points shown" if shown < total else f"{total:,} points"


def scatter_by_block(df: pd.DataFrame, x: str, y: str, tooltip: list[Any],
                     kind: str | None = None, size: int = 12, x_title: str | None = None,
                     y_title: str | None = None, robust: bool = True) -> alt.TopLevelMixin:
    """Points shaded light to dark by block; with `kind`, one colour family per kind.

    With `robust`, axis domains come from the 1-99% quantiles and the points beyond are drawn
    at the edge as crosses (`clip`; say so with `clipped_line`). With `kind`, a selector above
    the chart shows one kind alone.
    """
    xf, yf = x.split(":")[0], y.split(":")[0]
    if robust and len(df):
        df = clip(df, [xf, yf], {f: robust_domain(df[f]) for f in (xf, yf)})
    enc: dict[str, Any] = {
        "x": alt.X(x, title=x_title or axis_words(xf), scale=alt.Scale(zero=False)),
        "y": alt.Y(y, title=y_title or axis_words(yf), scale=alt.Scale(zero=False)),
        "tooltip": tooltip}
    if "clipped" in df:
        enc["shape"] = alt.Shape("clipped:N", title="point", scale=alt.Scale(
            domain=[INSIDE, OUTSIDE], range=["circle", "cross"]))
    base = alt.Chart(df).mark_point(size=size * 2, opacity=0.7, filled=True).encode(**enc)
    if kind is None:
        return base.encode(color=alt.Color("block:Q", title="block",
                                           scale=alt.Scale(range=BLOCK_RAMP)))
    pick = alt.selection_point(fields=[kind], name="show_kind", bind=alt.binding_select(
        options=[None, *KIND_RANGES], labels=["both", *KIND_WORDS.values()], name="show "))
    layers = [
        base.transform_filter(alt.datum[kind] == k).encode(
            color=alt.Color("block:Q", scale=alt.Scale(range=KIND_RANGES[k]),
                            legend=alt.Legend(title=f"{KIND_WORDS[k]} block")),
            opacity=alt.condition(pick, alt.value(0.75), alt.value(0.03)))
        for k in KIND_RANGES
    ]
    layers[0] = layers[0].add_params(pick)
    return alt.layer(*layers).resolve_scale(color="independent")


def component_pairs(df: pd.DataFrame, n_components: int, color: str = "position",
                    tooltip: list[Any] | None = None) -> alt.TopLevelMixin:
    """PC pairs (1-2, 3-4, 5-6) as lines in position order, coloured by position: helices show.

    The first position is marked with a ring and the last with a square, so the direction of
    travel can be read.
    """
    charts = []
    for a in range(0, n_components - 1, 2):
        x, y = f"pc{a + 1}", f"pc{a + 2}"
        tips = tooltip or [tip(color), tip(x), tip(y)]
        enc = {"x": alt.X(f"{x}:Q", title=axis_words(x), scale=alt.Scale(zero=False)),
               "y": alt.Y(f"{y}:Q", title=axis_words(y), scale=alt.Scale(zero=False))}
        path = alt.Chart(df).mark_trail(opacity=0.9).encode(
            **enc, order=alt.Order(f"{color}:Q"), size=alt.value(2),
            color=alt.Color(f"{color}:Q", title=color, scale=alt.Scale(scheme="viridis")),
            tooltip=tips)
        dots = alt.Chart(df).mark_circle(size=14).encode(
            **enc, color=alt.Color(f"{color}:Q", title=color, scale=alt.Scale(scheme="viridis")),
            tooltip=tips)
        ends = alt.Chart(df.iloc[[0, -1]].assign(end=["first", "last"]) if len(df) else df) \
            .mark_point(size=120, filled=False, strokeWidth=2, color="black").encode(
                **enc, shape=alt.Shape("end:N", title=f"{color}",
                                       scale=alt.Scale(domain=["first", "last"],
                                                       range=["circle", "square"])),
                tooltip=tips)
        charts.append(alt.layer(path, dots, ends).properties(width=220, height=220))
    return alt.hconcat(*charts)


def line(df: pd.DataFrame, x: str, y: str, color: str | None = None, log_y: bool = False,
         tooltip: list[Any] | None = None, x_title: str | None = None,
         y_title: str | None = None, color_title: str | None = None) -> alt.Chart:
    xf, yf = x.split(":")[0], y.split(":")[0]
    enc: dict[str, Any] = {
        "x": alt.X(x, title=x_title or axis_words(xf)),
        "y": alt.Y(y, title=y_title or axis_words(yf),
                   scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
        "tooltip": tooltip or [tip(xf, x_title), tip(yf, y_title)],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", sort=None, title=color_title or axis_words(color))
    return alt.Chart(df).mark_line(point=True).encode(**enc).properties(width=560, height=280)


def bars(df: pd.DataFrame, x: str, y: str, x_title: str, y_title: str,
         log_y: bool = False) -> alt.Chart:
    xf, yf = x.split(":")[0], y.split(":")[0]
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(x, title=x_title),
        y=alt.Y(y, title=y_title, scale=alt.Scale(type="symlog") if log_y else alt.Undefined),
        tooltip=[tip(xf, x_title), tip(yf, y_title)]
    ).properties(width=560, height=260)


def middle_band(first: int, last: int, label: str = "middle blocks") -> alt.Chart:
    """A shaded band over blocks first..last, layered under a per-block line chart."""
    band = pd.DataFrame({"start": [first - 0.5], "end": [last + 0.5], "range": [label]})
    return alt.Chart(band).mark_rect(opacity=0.12, color="#888").encode(
        x="start:Q", x2="end:Q", tooltip=[tip("range", "shaded", numeric=False)])


def sample_rows(n: int, cap: int) -> np.ndarray:
    """The first `cap` rows: reservoir rows are already in random (hash) order."""
    return np.arange(min(n, cap))


def spread_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """`cap` of `n` ordered rows (mean states by site and position), drawn evenly and seeded, in order."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


POINT_WORDS = {"embed": "initial embedding", "norm_attn": "norm before attention",
               "attn": "attention output", "resid_attn": "residual after attention",
               "norm_mlp": "norm before the MLP", "mlp": "MLP output",
               "resid_mlp": "residual after the MLP", "norm_final": "final norm"}
"""Capture points in a few words, for axis titles (the code names are on the methods page)."""


def point_words(point: str) -> str:
    """`resid_mlp` -> `residual after the MLP`; an unknown name gets its underscores spaced."""
    return POINT_WORDS.get(point, point.replace("_", " "))


def log_histogram(df: pd.DataFrame, lo: str, hi: str, count: str, x_title: str,
                  y_title: str = "count (log scale)", tooltip: list[Any] | None = None,
                  marks: pd.DataFrame | None = None) -> alt.TopLevelMixin:
    """Bars from `lo` to `hi` on a log axis, with a log count axis (empty bins left out).

    For values spanning decades (norms), where one big bin would flatten the rest. `marks`
    (columns `value`, `label`) draws labelled vertical rules, such as the median; its rows
    travel in the same data as the bars (a `rule` column tells them apart), so the chart has
    one dataset.
    """
    data = df.assign(rule="")
    if marks is not None and len(marks):
        data = pd.concat([data, marks.assign(rule=marks["label"])], ignore_index=True)
    base = alt.Chart(data)
    filled = df[df[count] > 0]
    span = [float(filled[lo].min()), float(filled[hi].max())] if len(filled) else [1.0, 10.0]
    xscale = alt.Scale(type="log", domain=span, nice=False)
    height = 260
    hist = base.transform_filter(f"datum.rule == '' && datum['{count}'] > 0").mark_bar(
        color="#4c78a8").encode(
        x=alt.X(f"{lo}:Q", title=x_title, scale=xscale, axis=alt.Axis(format=",~r")),
        x2=f"{hi}:Q",
        y=alt.Y(f"{count}:Q", title=y_title, scale=alt.Scale(type="log", domainMin=0.8),
                axis=alt.Axis(format=",~r")),
        y2=alt.value(height),  # bars rise from the axis: a log scale has no zero to start at
        tooltip=tooltip or [tip(lo, "from"), tip(hi, "to"), tip(count, y_title)])
    if marks is None or not len(marks):
        return hist.properties(width=560, height=height)
    rules = base.transform_filter("datum.rule != ''")
    rule = rules.mark_rule(color="#c0392b", strokeDash=[4, 3]).encode(
        x=alt.X("value:Q", scale=xscale), tooltip=[tip("rule", "mark", numeric=False),
                                                   tip("value", x_title)])
    text = rules.mark_text(align="right", dx=-4, baseline="top", color="#c0392b").encode(
        x=alt.X("value:Q", scale=xscale), y=alt.value(2), text="rule:N")
    return alt.layer(hist, rule, text).properties(width=560, height=height)


def typed_tip(field: str, title: str | None = None) -> alt.Tooltip:
    """`tip` for a layer without data of its own (fields typed as `name:Q` / `name:N`)."""
    name, _, kind = field.partition(":")
    kind = kind or "Q"
    title = title or axis_words(name)
    if kind == "Q":
        return alt.Tooltip(f"{name}:Q", title=title, format=NUM)
    return alt.Tooltip(f"{name}:{kind}", title=title)


# One-dataset layers. `chart_files` writes a chart's data as one table beside its spec, so a
# chart whose layers carry different DataFrames loses all but the first. The layers below have no
# data of their own: layered with `alt.layer(..., data=df)` they read the shared table.


def shade_blocks(first: int, last: int, label: str = "middle blocks",
                 x_title: str = "block") -> alt.Chart:
    """`middle_band` without its own data: one shaded band over blocks first..last.

    `x_title` must be the block axis's title: layered axes merge their titles.
    """
    import json

    return alt.Chart().transform_aggregate(rows="count()").transform_calculate(
        start=f"{first - 0.5}", end=f"{last + 0.5}", shaded=json.dumps(f"{label} {first}-{last}"),
    ).mark_rect(opacity=0.12, color="#888").encode(
        x=alt.X("start:Q", title=x_title), x2="end:Q", tooltip=[typed_tip("shaded:N", "shaded")])


def threshold_rule(value: float, label: str, y_title: str) -> alt.LayerChart:
    """A dashed horizontal rule at `value` with its label at the right end, no data of its own.

    `y_title` must be the value axis's title: layered axes merge their titles.
    """
    import json

    base = alt.Chart().transform_aggregate(rows="count()").transform_calculate(
        threshold=f"{float(value)!r}", what=json.dumps(label))
    rule = base.mark_rule(color="#c0392b", strokeDash=[6, 4], size=1.5).encode(
        y=alt.Y("threshold:Q", title=y_title),
        tooltip=[typed_tip("what:N", "line"), typed_tip("threshold:Q")])
    text = base.mark_text(align="right", baseline="bottom", dy=-3, color="#c0392b",
                          x="width").encode(y=alt.Y("threshold:Q", title=y_title),
                                            text="what:N")
    return alt.layer(rule, text)


def position_paths(df: pd.DataFrame, n_components: int, color: str = "position",
                   color_title: str = "sequence position") -> alt.HConcatChart:
    """`component_pairs` on one dataset: PC pairs (1-2, 3-4, ...) as paths in position order.

    A thin grey line joins the positions in order (a line cannot change colour along its
    length in Vega-Lite), and each position is a dot coloured by position (viridis, never
    white); the first position is ringed and the last squared, so the direction of travel
    reads. Takes the frame from `clip_pairs`: axes use robust domains, and a point beyond them
    is drawn at the edge as a cross (say so with `clipped_line`).
    """
    panels = []
    for a in range(0, n_components - 1, 2):
        x, y = f"pc{a + 1}", f"pc{a + 2}"
        cx, cy = f"{x}_shown", f"{y}_shown"
        enc = {"x": alt.X(f"{cx}:Q", title=axis_words(x), scale=alt.Scale(zero=False),
                          axis=alt.Axis(format=",.3~g")),
               "y": alt.Y(f"{cy}:Q", title=axis_words(y), scale=alt.Scale(zero=False),
                          axis=alt.Axis(format=",.3~g"))}
        tips = [typed_tip(f"{color}:Q", color_title), typed_tip(f"{x}:Q"), typed_tip(f"{y}:Q")]
        path = alt.Chart().mark_line(strokeWidth=1, color="#9a9a9a", opacity=0.7).encode(
            **enc, order=alt.Order(f"{color}:Q"))
        dots = alt.Chart().mark_point(filled=True, size=24, opacity=0.95).encode(
            **enc, tooltip=tips,
            color=alt.Color(f"{color}:Q", title=color_title, scale=alt.Scale(scheme="viridis")),
            shape=alt.Shape(f"{x}_clip:N", title="point", scale=alt.Scale(
                domain=[INSIDE, OUTSIDE], range=["circle", "cross"]), legend=None))
        ends = alt.Chart().transform_joinaggregate(
            first=f"min({color})", last=f"max({color})").transform_calculate(
            end=f"datum.{color} == datum.first ? 'first' : "
                f"(datum.{color} == datum.last ? 'last' : '')")
        first = ends.transform_filter("datum.end == 'first'").mark_point(
            shape="circle", size=220, filled=False, strokeWidth=2.5, color="black").encode(
            **enc, tooltip=[typed_tip("end:N", "end"), *tips])
        last = ends.transform_filter("datum.end == 'last'").mark_point(
            shape="square", size=180, filled=False, strokeWidth=2.5, color="black").encode(
            **enc, tooltip=[typed_tip("end:N", "end"), *tips])
        panels.append(alt.layer(path, dots, first, last, data=df)
                      .properties(width=240, height=240))
    return alt.hconcat(*panels)


def clip_pairs(df: pd.DataFrame, n_components: int) -> pd.DataFrame:
    """For `position_paths`: per pair, `pcN_shown` (clamped to the robust domain) and `pcN_clip`.

    The true `pcN` stays for tooltips; `clipped` marks rows clamped on any axis.
    """
    out = df.copy()
    outside = np.zeros(len(out), bool)
    for a in range(0, n_components - 1, 2):
        pair = np.zeros(len(out), bool)
        for f in (f"pc{a + 1}", f"pc{a + 2}"):
            lo, hi = robust_domain(out[f])
            v = out[f].to_numpy(np.float64)
            pair |= (v < lo) | (v > hi)
            out[f"{f}_shown"] = np.clip(v, lo, hi)
        out[f"pc{a + 1}_clip"] = np.where(pair, OUTSIDE, INSIDE)
        outside |= pair
    out["clipped"] = np.where(outside, OUTSIDE, INSIDE)
    return out


def block_slider(chart: alt.TopLevelMixin, df: pd.DataFrame, x: str, y: str, blocks: list[int],
                 x_title: str | None = None, y_title: str | None = None,
                 field: str = "block", label: str = "block") -> alt.TopLevelMixin:
    """A `scatter_by_block` chart with a block slider: one block at a time, or every block.

    A range input picks the block and an "every block" checkbox (on at first, so the static
    SVG shows all points) turns the filter off. Axes are fixed to the robust domains of all
    blocks (the same `robust_domain` on the same `df` that `scatter_by_block` was given), and
    the block colour ramp to `blocks`, so sliding never rescales an axis or recolours a block.
    Works on every layer of a kind-toggle chart.
    """
    xf, yf = x.split(":")[0], y.split(":")[0]
    doms = {f: robust_domain(df[f]) for f in (xf, yf)}
    lo, hi = int(min(blocks)), int(max(blocks))
    at = alt.param(name="block_at", value=lo, bind=alt.binding_range(
        min=lo, max=max(hi, lo + 1), step=1, name=f"{label} "))
    every = alt.param(name="every_block", value=True,
                      bind=alt.binding_checkbox(name=f"every {label} "))
    keep = f"every_block || datum['{field}'] == block_at"

    def fixed(layer: alt.Chart) -> alt.Chart:
        enc: dict[str, Any] = {
            "x": alt.X(x, title=x_title or axis_words(xf),
                       scale=alt.Scale(domain=doms[xf], zero=False, nice=False)),
            "y": alt.Y(y, title=y_title or axis_words(yf),
                       scale=alt.Scale(domain=doms[yf], zero=False, nice=False))}
        color = layer.encoding._kwds.get("color")
        if isinstance(color, alt.Color) and isinstance(color["scale"], alt.Scale):
            named = color._kwds.get("field")
            if not isinstance(named, str):  # given as a shorthand, `block:Q`
                named = str(color._kwds.get("shorthand", "")).split(":")[0]
            if named == field:
                color, scale = color.copy(), color["scale"].copy()
                scale["domain"] = [lo, hi]
                color["scale"] = scale
                enc["color"] = color
        return layer.transform_filter(keep).encode(**enc)

    if isinstance(chart, alt.LayerChart):
        out = chart.copy()
        out.layer = [fixed(layer) for layer in chart.layer]
    else:
        out = fixed(chart)
    return out.add_params(at, every)
