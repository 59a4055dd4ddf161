"""Repeated tokens: one token repeated over the whole sequence, compared with ordinary text.

For each repeated token, the mean middle-block residual norm at each position is drawn next to
the same curve on text (the mean over the text windows). The trajectory chart projects the
middle-block residual at each position (averaged over the middle blocks, as a unit vector) onto
two principal components fitted on the repeated sequences and the text baseline together: one
path per repeated token, coloured by position from the first position (ring) to the last
(square), and the text's mean state per position as a dashed path. With nothing new to read,
a repeated sequence settles: its path contracts after the first few positions.

Position 0 (the BOS token, or the first token where the tokenizer adds none) carries the
massive first-position norm and is left out of both charts; its norm is in the table. Any other
position whose norm is massive (over 4x the median position) in the text or in a repeated
sequence is left out of the trajectory and of the norm ratio, and the chart says which. The
numbers: the repeated sequences' norm relative to text, and how similar the state at the last
position is to the state halfway (cosine), per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.analysis import outliers, pca
from generator.capture.sites import middle_blocks, middle_sites
from generator.experiment import ChartView, Context, Experiment, MiddleParams, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.sample_norms import SampleNorms

REPEATED, TEXT = "repeated token", "text baseline"


@dataclass(frozen=True)
class Params(MiddleParams):
    """Only the shared middle-block parameters: the point read and the middle share of depth."""


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.means import MeanState
    from generator.reducers.sample_norms import SampleNorms

    sites = middle_sites(ctx.n_blocks, p.point, p.middle_fraction)
    n, t = ctx.n_samples["repeat"], ctx.seq_len["repeat"]
    return {
        "repeat": {"norms": SampleNorms(sites, n, t),
                   "mean": MeanState(sites, ctx.d_model, keep=("sample", "position"), seq_len=t,
                                     max_samples=n)},
        "text": {"norms": SampleNorms(sites, ctx.n_samples["text"], ctx.seq_len["text"]),
                 "mean": MeanState(sites, ctx.d_model, keep=("position",),
                                   seq_len=ctx.seq_len["text"])},
    }


def _label(token: str) -> str:
    return f"repeated “{ch.visible_token(token)}”"


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    labels = ctx.input_labels["repeat"]
    n_text = ctx.n_samples["text"]
    text_label = f"text (mean of {n_text:,} windows)"
    rep_norms: SampleNorms = stats["repeat"]["norms"]
    text_norms: SampleNorms = stats["text"]["norms"]
    rep = rep_norms.means()  # (sequence, position)
    text = np.nanmean(text_norms.means(), axis=0)  # (position,): mean over text windows
    t = min(rep.shape[1], len(text))
    rows = [{"sequence": _label(lab), "kind": REPEATED, "position": i, "mean_norm": float(rep[s, i])}
            for s, lab in enumerate(labels) for i in range(1, t)]
    rows += [{"sequence": text_label, "kind": TEXT, "position": i, "mean_norm": float(text[i])}
             for i in range(1, t)]

    # Positions >= 1 whose norm is massive in the text or in any repeated sequence: left out of
    # the geometry and the ratio (position 0 always is), reported in the subtitle.
    massive = sorted({i + 1 for curve in (text[1:t], *rep[:, 1:t])
                      for i in outliers.massive_positions(curve)})
    keep = np.array([i for i in range(1, t) if i not in massive], dtype=int)

    rep_means, _ = stats["repeat"]["mean"].means()
    text_means, _ = stats["text"]["mean"].means()
    traj = rep_means[0][:, keep, :]  # (sequence, kept positions, D)
    base = text_means[0, 0][keep]  # (kept positions, D)
    both = pca.unit(np.concatenate([traj.reshape(-1, traj.shape[-1]), base]))
    fit = pca.fit(both, 2)
    xy = fit.transform(both)
    n_rep = traj.shape[0] * traj.shape[1]
    rep_xy = xy[:n_rep].reshape(traj.shape[0], traj.shape[1], 2)
    ends = {0: "first", len(keep) - 1: "last"}
    trajectory = [{"sequence": _label(lab), "kind": REPEATED, "position": int(pos),
                   "pc1": float(rep_xy[s, j, 0]), "pc2": float(rep_xy[s, j, 1]),
                   "end": ends.get(j, "")}
                  for s, lab in enumerate(labels) for j, pos in enumerate(keep)]
    trajectory += [{"sequence": text_label, "kind": TEXT, "position": int(pos),
                    "pc1": float(xy[n_rep + j, 0]), "pc2": float(xy[n_rep + j, 1]),
                    "end": ends.get(j, "")} for j, pos in enumerate(keep)]

    table, ratios, settles = [], [], []
    for s, lab in enumerate(labels):
        u = pca.unit(rep_means[0, s, 1:])  # every position >= 1, whatever its norm
        settle = float(u[-1] @ u[len(u) // 2])
        ratio = float(np.nanmean(rep[s, keep]) / np.nanmean(text[keep]))
        table.append({"token": ch.visible_token(lab), "norm_vs_text": ratio,
                      "late_cosine": settle, "pos0_norm": float(rep[s, 0])})
        ratios.append(ratio)
        settles.append(settle)
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    return Result(
        metrics={"repeat_norm_over_text": float(np.mean(ratios)),
                 "repeat_late_cosine": float(np.mean(settles))},
        tables={"repeat_tokens": table, "norm_by_position": rows, "trajectory": trajectory},
        facts={"point": p.point, "middle_blocks": [mids[0], mids[-1]],
               "explained_variance_ratio": [float(v) for v in fit.explained_variance_ratio],
               "positions": [1, t - 1], "massive_positions": massive,
               "pos0_norm": float(np.nanmean(rep[:, 0])), "text_pos0_norm": float(text[0]),
               "text_windows": n_text})


def _dash(legend: bool = True) -> object:
    import altair as alt

    return alt.StrokeDash("kind:N", title="curve", scale=alt.Scale(
        domain=[REPEATED, TEXT], range=[[1, 0], [5, 3]]), legend=alt.Undefined if legend else None)


def _num(v: float) -> str:
    """18,227 or 0.153: thousands separated, three significant digits below 100."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def charts(r: Result, view: ChartView) -> dict[str, object]:
    import altair as alt

    f = r.facts
    first, last = f["middle_blocks"]
    p0, p1 = f.get("positions", [1, None])
    where = f"{ch.point_words(f['point'])}, averaged over middle blocks {first}-{last}"
    pos0 = (f"position 0 left out: norm {_num(f['pos0_norm'])} in the repeated sequences, "
            f"{_num(f['text_pos0_norm'])} in text (see the norms page)" if "pos0_norm" in f else
            "position 0 left out (see the norms page)")
    tips = [ch.tip("sequence", numeric=False), ch.tip("position"),
            ch.tip("mean_norm", "mean norm")]
    norm = alt.Chart(r.frame("norm_by_position")).mark_line(point=alt.OverlayMarkDef(size=14)).encode(
        x=alt.X("position:Q", title="sequence position", scale=alt.Scale(zero=False)),
        y=alt.Y("mean_norm:Q", title="mean norm (log scale)", scale=alt.Scale(type="log"),
                axis=alt.Axis(format=",~r")),
        color=alt.Color("sequence:N", title="sequence", sort=None),
        strokeDash=_dash(legend=False), tooltip=tips).properties(width=560, height=300)

    df = r.frame("trajectory")
    e1, e2 = f["explained_variance_ratio"]
    x = alt.X("pc1:Q", title=f"principal component 1 ({e1:.0%} of variance)",
              scale=alt.Scale(zero=False))
    y = alt.Y("pc2:Q", title=f"principal component 2 ({e2:.0%} of variance)",
              scale=alt.Scale(zero=False))
    ttips = [ch.tip("sequence", numeric=False), ch.tip("position"),
             ch.tip("pc1", "principal component 1"), ch.tip("pc2", "principal component 2")]
    base = alt.Chart(df)
    paths = base.mark_line(strokeWidth=1.5, opacity=0.7).encode(
        x=x, y=y, detail="sequence:N", order="position:Q", strokeDash=_dash(),
        color=alt.Color("sequence:N", title="sequence", sort=None), tooltip=ttips)
    dots = base.mark_circle(size=28, opacity=0.9).encode(
        x=x, y=y, color=alt.Color("position:Q", title="position",
                                  scale=alt.Scale(scheme="viridis")), tooltip=ttips)
    ends = base.transform_filter("datum.end != ''").mark_point(
        size=150, filled=False, strokeWidth=2, color="black").encode(
        x=x, y=y, shape=alt.Shape("end:N", title="path", scale=alt.Scale(
            domain=["first", "last"], range=["circle", "square"])), tooltip=ttips)
    names = base.transform_filter("datum.end == 'last'").mark_text(
        align="left", dx=9, fontSize=11).encode(x=x, y=y, text="sequence:N")
    trajectory = alt.layer(paths, dots, ends, names).resolve_scale(color="independent") \
        .properties(width=520, height=420)
    left_out = ", ".join(str(i) for i in f.get("massive_positions", []))
    return {
        "norm_by_position": ch.titled(
            norm, "Norm per position: each repeated token against text",
            [f"{where}; " + pos0]),
        "trajectory": ch.titled(
            trajectory, "Path of the residual over positions: repeated tokens and text (PCA)",
            [f"{where}, as unit vectors; positions {p0}-{p1}, first ring, last square",
             f"massive-norm position(s) {left_out} also left out" if left_out else ""]),
    }


EXPERIMENT = Experiment(
    name="repeat",
    title="Repeated-token sequences",
    doc=__doc__,
    order=60,
    modes=("repeat", "text"),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "repeat_norm_over_text": "mean norm (positions >= 1, massive-norm positions left out) of "
                                 "repeated-token sequences over that of text, averaged over tokens",
        "repeat_late_cosine": "cosine between the state at the middle and the last position of "
                              "a repeated sequence (1 = settled)",
    },
    tables=("repeat_tokens",),
    paper_figures={"trajectory": "Repeated tokens: how the state evolves over positions when "
                                 "one token repeats (BOS first)"},
)
