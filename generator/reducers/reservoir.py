"""A seeded, sharding-invariant sample of labelled token states (scatters, UMAP, probes)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from generator.capture.batch import State
from generator.capture.hashing import token_hash
from generator.capture.sites import Site
from generator.reducers.base import Reducer, _np


class Reservoir(Reducer):
    """A seeded sample of `k` labelled token states: the `k` smallest hash keys over all seen.

    Keys depend only on (seed, site, sample, position), so the sample is the same whatever the
    batching or sharding, and merging two reservoirs is exactly a reservoir of the union.
    Candidates under the current threshold are buffered and pruned to `k` only when the buffer
    passes `4 k`, so intake costs little once the threshold has settled. With `population` (the
    number of (site, token) pairs the whole run will offer) the threshold starts where
    `k + 10 sqrt(k) + 30` keys are expected below it instead of at the top: every shard skips
    nearly all tokens from its first batch, and the result is still exactly the k smallest keys
    unless a binomial with that mean falls below k, over 6 standard deviations away for every k
    (about 10 for k in the thousands, as the suite uses).
    """

    kind = "reservoir"
    LABELS = ("key", "depth", "block", "sample", "position", "token")
    KEY_SPACE = 1 << 62

    def __init__(self, sites: Iterable[Site], d_model: int, k: int, seed: int,
                 population: int = 0) -> None:
        super().__init__(sites)
        self.k, self.seed = k, seed
        self.params = {"d_model": d_model, "k": k, "seed": seed, "population": population}
        self._state = {"vectors": np.zeros((0, d_model), np.float32),
                       **{name: np.zeros(0, np.int64) for name in self.LABELS}}
        expected = k + 10 * k ** 0.5 + 30
        start = self.KEY_SPACE * min(1.0, expected / population) if population else self.KEY_SPACE
        self._threshold = int(start)
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0

    def update(self, state: State) -> None:
        b = state.batch
        keys = token_hash(b.samples, b.positions, self.seed * 100_003 + state.site.depth)
        take = b.mask & (keys < self._threshold)
        rows = state.h[take]
        n = len(rows)
        if n == 0:
            return
        self._pending.append({
            "vectors": _np(rows.float()), "key": _np(keys[take]),
            "depth": np.full(n, state.site.depth), "block": np.full(n, state.site.block),
            "sample": _np(b.samples[take]), "position": _np(b.positions[take]),
            "token": _np(b.input_ids[take])})
        self._pending_rows += n
        if self._pending_rows > 4 * self.k:
            self._fold()

    def _fold(self) -> None:
        if self._pending:
            self._absorb(self._pending)
            self._pending, self._pending_rows = [], 0

    def _absorb(self, parts: list[dict[str, np.ndarray]]) -> None:
        st = {k: np.concatenate([self._state[k], *(p[k].astype(self._state[k].dtype) for p in parts)])
              for k in self._state}
        order = np.lexsort((st["depth"], st["key"]))[: self.k]
        self._state = {k: v[order] for k, v in st.items()}
        if len(self._state["key"]) >= self.k:
            self._threshold = int(self._state["key"][-1])

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        self._absorb([b])

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._pending, self._pending_rows = [], 0
        self._state = {k: np.asarray(arrays[k], dtype=self._state[k].dtype) for k in self._state}
