"""A seeded, sharding-invariant sample of labelled token states (scatters, UMAP, probes)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import State, token_hash_np
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
        self._vec_pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._dvec: torch.Tensor | None = None
        """The kept rows on the capture device while a shard runs (labels stay on the host)."""

    def update(self, state: State) -> None:
        """Take this site's candidates: one row gather on the device, no sync.

        Which tokens are candidates depends only on the hash keys, so it is decided on the host
        (numpy, from the batch's ids).
        """
        b = state.batch
        t = b.np_mask.shape[1]
        keys = token_hash_np(b.np_sample_ids[:, None], np.arange(t)[None, :],
                             self.seed * 100_003 + state.site.depth)
        flat = np.flatnonzero(b.np_mask & (keys < self._threshold))
        n = len(flat)
        if n == 0:
            return
        h = state.h.reshape(-1, state.h.shape[-1])
        self._vec_pending.append(h.index_select(0, b.to_device(flat)).float())
        self._pending.append({
            "key": keys.reshape(-1)[flat], "depth": np.full(n, state.site.depth),
            "block": np.full(n, state.site.block), "sample": b.np_sample_ids[flat // t],
            "position": flat % t, "token": b.np_input_ids.reshape(-1)[flat].astype(np.int64)})
        self._pending_rows += n

    def end_batch(self) -> None:
        if self._pending_rows > 4 * self.k:
            self._absorb_pending()

    def _absorb_pending(self) -> None:
        """Keep the k smallest keys of state + candidates: labels on the host, rows on the device."""
        if not self._pending:
            return
        parts, vecs = self._pending, self._vec_pending
        self._pending, self._vec_pending, self._pending_rows = [], [], 0
        labels = {k: np.concatenate([self._state[k], *(p[k].astype(self._state[k].dtype)
                                                          for p in parts)]) for k in self.LABELS}
        order = np.lexsort((labels["depth"], labels["key"]))[: self.k]
        kept = self._dvec
        if kept is None:
            kept = torch.from_numpy(self._state["vectors"]).to(vecs[0].device)
        pool = torch.cat([kept, *vecs])
        idx = torch.from_numpy(order.astype(np.int64))
        if pool.device.type != "cpu":
            idx = idx.pin_memory().to(pool.device, non_blocking=True)
        self._dvec = pool.index_select(0, idx)
        self._state.update({k: v[order] for k, v in labels.items()})
        if len(self._state["key"]) >= self.k:
            self._threshold = int(self._state["key"][-1])

    def _fold(self) -> None:
        self._absorb_pending()
        if self._dvec is not None:
            self._state["vectors"] = _np(self._dvec)
            self._dvec = None

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
        self._pending, self._vec_pending, self._pending_rows, self._dvec = [], [], 0, None
        self._state = {k: np.asarray(arrays[k], dtype=self._state[k].dtype) for k in self._state}
