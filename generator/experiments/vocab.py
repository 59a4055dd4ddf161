r"""Single tokens over the vocabulary: every token id run alone as a one-token input.

Each token's residual norm, averaged over the middle blocks, goes into a histogram with a log
norm axis and a log count axis (a few tokens far from the bulk stay visible next to bins of
thousands); the median is marked. The second chart and the tables list the tokens with the
highest and the lowest norms, shown visibly (`␣` for a space, `\n` for a newline, `<0x0A>`
for a byte). A lone token sits at position 0, with no BOS before it, so this shows how the
first-position effect varies with the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from generator import charts as ch
from generator.capture.sites import middle_blocks, middle_sites
from generator.experiment import ChartView, Context, Experiment, MiddleParams, Needs, Result

if TYPE_CHECKING:
    from generator.reducers.sample_norms import SampleNorms

HIGH, LOW = "highest norm", "lowest norm"


@dataclass(frozen=True)
class Params(MiddleParams):
    top: int = 20
    """Tokens listed in each of the highest- and lowest-norm tables."""
    bins: int = 60
    """Bins of the norm histogram (equal widths on a log scale)."""


def needs(ctx: Context, p: Params) -> Needs:
    from generator.reducers.sample_norms import SampleNorms

    sites = middle_sites(ctx.n_blocks, p.point, p.middle_fraction)
    return {"singular": {"norms": SampleNorms(sites, ctx.n_samples["singular"], 1)}}


def compute(ctx: Context, p: Params, stats: Needs) -> Result:
    sn: SampleNorms = stats["singular"]["norms"]
    all_norms = sn.means()[:, 0]  # sample i is token id i, run alone
    ids = np.flatnonzero(np.isfinite(all_norms))  # ids that were run
    norms = all_norms[ids]
    counts, edges = np.histogram(np.log10(np.maximum(norms, 1e-12)), bins=p.bins)
    hist = [{"norm_from": float(10 ** a), "norm_to": float(10 ** b), "tokens": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]
    order = np.argsort(norms, kind="stable")

    def rows(picked: np.ndarray) -> list[dict]:
        texts = ctx.token_text(ids[picked])
        return [{"token_id": int(ids[i]), "token": ch.visible_token(text),
                 "mean_norm": float(norms[i])}
                for i, text in zip(picked, texts, strict=True)]

    med = float(np.median(norms))
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    return Result(
        metrics={"vocab_norm_median": med,
                 "vocab_norm_max_over_median": float(norms.max() / med),
                 "vocab_norm_min_over_median": float(norms.min() / med),
                 "vocab_tokens": float(len(norms))},
        tables={"highest_norm_tokens": rows(order[::-1][: p.top]),
                "lowest_norm_tokens": rows(order[: p.top]),
                "norm_histogram": hist},
        facts={"tokens": len(norms), "point": p.point, "middle_blocks": [mids[0], mids[-1]],
               "median": med},
        notes=[] if len(ids) == len(all_norms) else
        [f"{len(all_norms) - len(ids):,} token ids were not run and are left out"])


def charts(r: Result, view: ChartView) -> dict[str, object]:
    import altair as alt
    import pandas as pd

    f = r.facts
    first, last = f["middle_blocks"]
    what = f"mean norm of the {ch.point_words(f['point'])}, blocks {first}-{last}"
    hist = r.frame("norm_histogram")
    marks = pd.DataFrame({"value": [f["median"]], "label": ["median"]}) if "median" in f else None
    histogram = ch.log_histogram(
        hist, "norm_from", "norm_to", "tokens", f"{what} (log scale)", "token ids (log scale)",
        tooltip=[ch.tip("norm_from", "norm from"), ch.tip("norm_to", "norm to"),
                 ch.tip("tokens", "token ids")], marks=marks)

    ends = pd.concat([r.frame("highest_norm_tokens").assign(group=HIGH),
                      r.frame("lowest_norm_tokens").assign(group=LOW)], ignore_index=True)
    if len(ends):
        ends = ends.drop_duplicates("token_id").sort_values("mean_norm", ascending=False)
        ends["label"] = [f"{t}  (id {i:,})" for t, i in zip(ends["token"], ends["token_id"],
                                                              strict=True)]
    extremes = alt.Chart(ends).mark_point(filled=True, size=70, opacity=0.9).encode(
        x=alt.X("mean_norm:Q", title=f"{what} (log scale)",
                scale=alt.Scale(type="log", nice=False, padding=12), axis=alt.Axis(format=",~r")),
        y=alt.Y("label:N", title="token (id)", sort=None),
        color=alt.Color("group:N", title="tokens", scale=alt.Scale(
            domain=[HIGH, LOW], range=["#c0392b", "#2e86c1"])),
        tooltip=[ch.tip("token", numeric=False), ch.tip("token_id", "token id"),
                 ch.tip("mean_norm", "mean norm")],
    ).properties(width=480, height=max(120, 14 * len(ends)))
    n = len(r.frame("highest_norm_tokens"))
    return {
        "norm_histogram": ch.titled(
            histogram, "Mean middle-block norm of every token run alone",
            [f"{f['tokens']:,} token ids, each alone at position 0; empty bins not drawn"]),
        "extreme_tokens": ch.titled(
            extremes, f"The {n} highest- and {n} lowest-norm tokens",
            ["␣ is a space, \\n a newline, <0xNN> a byte"]),
    }


EXPERIMENT = Experiment(
    name="vocab",
    title="Single tokens across the vocabulary",
    doc=__doc__,
    order=70,
    modes=("singular",),
    params=Params,
    needs=needs,
    compute=compute,
    charts=charts,
    metrics={
        "vocab_norm_median": "median over tokens of the mean middle-block norm",
        "vocab_norm_max_over_median": "largest token norm over median",
        "vocab_norm_min_over_median": "smallest token norm over median",
        "vocab_tokens": "token ids run",
    },
    tables=("highest_norm_tokens", "lowest_norm_tokens"),
    paper_figures={"norm_histogram": "Norms: histogram over the vocabulary (singular mode) of "
                                     "the mean middle-block norm"},
)
