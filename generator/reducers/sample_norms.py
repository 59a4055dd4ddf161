"""Mean token norm per (sample, position): per-token results (vocabulary, repeats)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import Batch, State
from generator.capture.sites import Site
from generator.reducers.base import Sums


class SampleNorms(Sums):
    """Mean token norm over `sites` for every (sample, position): per-token results (vocab, repeat).

    Hot path: `update` keeps a reference to the site's norms; `end_batch` adds the batch's sum
    over sites and its count once (three device ops per batch, no sync).
    """

    kind = "sample_norms"

    def __init__(self, sites: Iterable[Site], n_samples: int, seq_len: int) -> None:
        super().__init__(sites)
        self.params = {"n_samples": n_samples, "seq_len": seq_len}
        self._state = {"sum": np.zeros((n_samples, seq_len)), "count": np.zeros((n_samples, seq_len))}
        self._norms: list[torch.Tensor] = []
        self._batch: Batch | None = None

    def update(self, state: State) -> None:
        if self._batch is not None and state.batch is not self._batch:
            self.end_batch()
        self._batch = state.batch
        self._norms.append(state.norms2d)

    def end_batch(self) -> None:
        if not self._norms:
            return
        b, norms = self._batch, self._norms
        assert b is not None
        self._norms, self._batch = [], None
        if self._dev is None:
            self._dev = self._zeros(norms[0])
        t = b.mask.shape[1]
        total = norms[0].double() if len(norms) == 1 else torch.stack(norms).double().sum(0)
        self._dev["sum"][b.sample_ids, :t] += total
        self._dev["count"][b.sample_ids, :t] += b.fmask.double() * len(norms)

    def means(self) -> np.ndarray:
        st = self.arrays()
        c = st["count"]
        return np.divide(st["sum"], c, out=np.full_like(c, np.nan), where=c > 0)
