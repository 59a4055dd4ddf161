"""Norm statistics per site: mean and variance of token norms, and the mean norm per position."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import Batch, State
from generator.capture.sites import Site
from generator.reducers.base import Reducer, chan_merge


class NormStats(Reducer):
    """Per site: count, mean and M2 of token norms (pairwise merge), and norm sums per position.

    Hot path: `update` only keeps a reference to the site's (B, T) norms (computed once per
    state, shared with the other reducers); `end_batch` reduces every site of the batch at once,
    a fixed dozen device ops per batch whatever the number of sites, with no host sync.
    """

    kind = "norm_stats"

    def __init__(self, sites: Iterable[Site], seq_len: int) -> None:
        super().__init__(sites)
        s, t = len(self.sites), seq_len
        self.seq_len = seq_len
        self.params = {"seq_len": seq_len}
        self._state = {"n": np.zeros(s), "mean": np.zeros(s), "m2": np.zeros(s),
                       "n_pos": np.zeros((s, t)), "sum_pos": np.zeros((s, t))}
        self._seen: list[int] = []
        self._norms: list[torch.Tensor] = []
        self._batch: Batch | None = None
        self._sel: dict[tuple[int, ...], torch.Tensor] = {}

    def update(self, state: State) -> None:
        if self._batch is not None and state.batch is not self._batch:
            self.end_batch()
        self._batch = state.batch
        self._seen.append(self.index[(state.site.point, state.site.block)])
        self._norms.append(state.norms2d)

    def end_batch(self) -> None:
        if not self._norms:
            return
        b, seen = self._batch, tuple(self._seen)
        assert b is not None
        x = torch.stack(self._norms).double()  # (S, B, T), 0 at padding
        self._norms, self._seen, self._batch = [], [], None
        if self._dev is None:
            self._dev = self._zeros(x)
        d, t = self._dev, x.shape[2]
        w = b.fmask.double()
        n_b = w.sum().expand(len(seen))
        mean_b = x.sum((1, 2)) / n_b.clamp_min(1)
        dev_b = x - mean_b[:, None, None]
        if not b.full:
            dev_b = dev_b * w
        m2_b = (dev_b ** 2).sum((1, 2))
        if seen == tuple(range(len(self.sites))):
            sel: slice | torch.Tensor = slice(None)
        else:
            if seen not in self._sel:
                self._sel[seen] = b.to_device(np.array(seen, np.int64))
            sel = self._sel[seen]
        n, mean, m2 = chan_merge(d["n"][sel], d["mean"][sel], d["m2"][sel], n_b, mean_b, m2_b)
        d["n"][sel], d["mean"][sel], d["m2"][sel] = n, mean, m2
        d["n_pos"][sel, :t] += w.sum(0)
        d["sum_pos"][sel, :t] += x.sum(1)

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        a = self._state
        a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                b["n"], b["mean"], b["m2"])
        a["n_pos"] = a["n_pos"] + b["n_pos"]
        a["sum_pos"] = a["sum_pos"] + b["sum_pos"]

    def variance(self) -> np.ndarray:
        n = self.arrays()["n"]
        return np.divide(self._state["m2"], n - 1, out=np.zeros_like(n), where=n > 1)

    def mean_pos(self) -> np.ndarray:
        """(sites, positions) mean norm; NaN where no token was seen."""
        st = self.arrays()
        return np.divide(st["sum_pos"], st["n_pos"], out=np.full_like(st["n_pos"], np.nan),
                         where=st["n_pos"] > 0)
