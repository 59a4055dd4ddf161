"""Single tokens over the vocabulary: every token id run alone as a one-token input.

Each token's residual norm, averaged over the middle blocks, goes into a histogram; the tables
list the tokens with the highest and the lowest norms. A lone token sits at position 0, so this
shows how the first-position effect varies with the token itself.
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


@dataclass(frozen=True)
class Params(MiddleParams):
    top: int = 20
    """Tokens listed in each of the highest- and lowest-norm tables."""
    bins: int = 60
    """Bins of the norm histogram (log10 scale)."""


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
    hist = [{"log10_norm": float((a + b) / 2), "tokens": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]
    order = np.argsort(norms, kind="stable")

    def rows(picked: np.ndarray) -> list[dict]:
        texts = ctx.token_text(ids[picked])
        return [{"token_id": int(ids[i]), "token": text, "mean_norm": float(norms[i])}
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
        facts={"tokens": len(norms), "point": p.point, "middle_blocks": [mids[0], mids[-1]]},
        notes=[] if len(ids) == len(all_norms) else
        [f"{len(all_norms) - len(ids):,} token ids were not run and are left out"])


def charts(r: Result, view: ChartView) -> dict[str, object]:
    return {
        "norm_histogram": ch.titled(
            ch.bars(r.frame("norm_histogram"), "log10_norm:Q", "tokens:Q",
                    "log10 mean middle-block norm", "tokens"),
            "Mean middle-block norm of every token run alone",
            [f"{r.facts['tokens']:,} token ids"]),
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
)
