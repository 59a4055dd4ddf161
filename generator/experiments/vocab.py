"""Single tokens over the vocabulary: every token id run alone as a one-token input.

Each token's residual norm, averaged over the middle blocks, goes into a histogram; the tables
list the tokens with the highest and the lowest norms. A lone token sits at position 0, so this
shows how the first-position effect varies with the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from generator import charts
from generator.experiments import Context, Needs, Output
from generator.points import all_sites, middle_blocks
from generator.reducers import SampleNorms

NAME = "vocab"
TITLE = "Single tokens across the vocabulary"


@dataclass(frozen=True)
class Params:
    point: str = "resid_mlp"
    middle_fraction: float = 0.6
    top: int = 20
    bins: int = 60


def skip_reason(ctx: Context, p: Params) -> str | None:
    return None


def needs(ctx: Context, p: Params) -> Needs:
    mids = middle_blocks(ctx.n_blocks, p.middle_fraction)
    sites = [s for s in all_sites(ctx.n_blocks) if s.point == p.point and s.block in mids]
    return {"singular": {"norms": SampleNorms(sites, ctx.n_samples["singular"], 1)}}


def build(ctx: Context, p: Params, stats: Needs) -> Output:
    norms = stats["singular"]["norms"].means()[:, 0]  # type: ignore[attr-defined]
    logn = np.log10(np.maximum(norms, 1e-12))
    counts, edges = np.histogram(logn, bins=p.bins)
    hist = pd.DataFrame({"log10_norm": (edges[:-1] + edges[1:]) / 2, "tokens": counts})
    out = Output()
    out.charts["norm_histogram"] = charts.titled(
        charts.bars(hist, "log10_norm:Q", "tokens:Q", "log10 mean middle-block norm",
                    "tokens"),
        "Mean middle-block norm of every token run alone",
        [f"{len(norms):,} token ids"])
    order = np.argsort(norms, kind="stable")

    def rows(ids: np.ndarray) -> list[dict]:
        return [{"token_id": int(i), "token": ctx.token_text([i])[0], "mean_norm": float(norms[i])}
                for i in ids]

    out.tables["highest_norm_tokens"] = rows(order[::-1][: p.top])
    out.tables["lowest_norm_tokens"] = rows(order[: p.top])
    med = float(np.median(norms))
    out.metrics = {
        "vocab_norm_median": (med, "median over tokens of the mean middle-block norm"),
        "vocab_norm_max_over_median": (float(norms.max() / med), "largest token norm over median"),
        "vocab_norm_min_over_median": (float(norms.min() / med), "smallest token norm over median"),
        "vocab_tokens": (float(len(norms)), "token ids run"),
    }
    return out
