"""Mean token norm per (sample, position): per-token results (vocabulary, repeats)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from generator.capture.batch import State
from generator.capture.sites import Site
from generator.reducers.base import Sums


class SampleNorms(Sums):
    """Mean token norm over `sites` for every (sample, position): per-token results (vocab, repeat)."""

    kind = "sample_norms"

    def __init__(self, sites: Iterable[Site], n_samples: int, seq_len: int) -> None:
        super().__init__(sites)
        self.params = {"n_samples": n_samples, "seq_len": seq_len}
        self._state = {"sum": np.zeros((n_samples, seq_len)), "count": np.zeros((n_samples, seq_len))}

    def update(self, state: State) -> None:
        b = state.batch
        if self._dev is None:
            self._dev = self._zeros(state.h)
        t = b.mask.shape[1]
        self._dev["sum"][b.sample_ids, :t] += state.norms2d.double()
        self._dev["count"][b.sample_ids, :t] += b.fmask.double()

    def means(self) -> np.ndarray:
        st = self.arrays()
        c = st["count"]
        return np.divide(st["sum"], c, out=np.full_like(c, np.nan), where=c > 0)
