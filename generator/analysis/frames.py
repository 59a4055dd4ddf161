"""Reducer states as labelled rows: the reservoir's sampled token states and MeanState's means.

Each function returns the vectors (one per row) beside a DataFrame of their labels in the same
order, so an experiment can project the vectors and store the projection with its labels
(`rows`). Used by `compute` only; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from generator.reducers.means import MeanState
    from generator.reducers.reservoir import Reservoir


def token_texts(ids: Any, decode: Callable[[Any], list[str]]) -> list[str]:
    """`decode` applied to token ids, each distinct id decoded once."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    uniq, inv = np.unique(ids, return_inverse=True)
    texts = decode(uniq)
    return [texts[i] for i in inv.reshape(-1)]


def reservoir(res: Reservoir, min_position: int = 0,
              decode: Callable[[Any], list[str]] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """The reservoir's rows at positions `>= min_position`, in its order (random, by hash key).

    Labels: `point`, `block`, `sample`, `position`, `token_id`, and with `decode` (token ids to
    texts, e.g. `Context.token_text`) the token's text as `token`.
    """
    a = res.arrays()
    point_of = {s.depth: s.point for s in res.sites}
    keep = a["position"] >= min_position
    labels = pd.DataFrame({
        "point": [point_of[int(d)] for d in a["depth"][keep]],
        "block": a["block"][keep], "sample": a["sample"][keep],
        "position": a["position"][keep], "token_id": a["token"][keep]})
    if decode is not None:
        labels["token"] = token_texts(labels["token_id"], decode)
    return a["vectors"][keep], labels


def mean_states(ms: MeanState, min_position: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """MeanState's non-empty slots (positions `>= min_position`), in site, sample, position order.

    Labels are the axes the reducer keeps apart: `point` and `block` for `site`, then `sample`
    and `position`.
    """
    means, counts = ms.means()
    site, sample, position = np.indices(counts.shape)
    ok = counts > 0
    if "position" in ms.keep:
        ok &= position >= min_position
    cols: dict[str, Any] = {}
    if "site" in ms.keep:
        cols["point"] = np.array([s.point for s in ms.sites])[site[ok]]
        cols["block"] = np.array([s.block for s in ms.sites])[site[ok]]
    if "sample" in ms.keep:
        cols["sample"] = sample[ok]
    if "position" in ms.keep:
        cols["position"] = position[ok]
    return means[ok], pd.DataFrame(cols)


def rows(labels: pd.DataFrame, xy: np.ndarray, names: Sequence[str] = ("pc1", "pc2"),
         columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Table rows (plain Python values): the 2-D projection `xy` as `names`, then `columns` of labels."""
    df = pd.DataFrame({n: np.asarray(xy[:, i], dtype=np.float64) for i, n in enumerate(names)})
    picked = labels[list(columns) if columns is not None else list(labels.columns)]
    return pd.concat([df, picked.reset_index(drop=True)], axis=1).to_dict("records")
