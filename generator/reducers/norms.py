"""Norm statistics per site: mean and variance of token norms, and the mean norm per position."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from generator.capture.batch import State
from generator.capture.sites import Site
from generator.reducers.base import Reducer, chan_merge


class NormStats(Reducer):
    """Per site: count, mean and M2 of token norms (pairwise merge), and norm sums per position."""

    kind = "norm_stats"

    def __init__(self, sites: Iterable[Site], seq_len: int) -> None:
        super().__init__(sites)
        s, t = len(self.sites), seq_len
        self.seq_len = seq_len
        self.params = {"seq_len": seq_len}
        self._state = {"n": np.zeros(s), "mean": np.zeros(s), "m2": np.zeros(s),
                       "n_pos": np.zeros((s, t)), "sum_pos": np.zeros((s, t))}

    def update(self, state: State) -> None:
        i = self.index[(state.site.point, state.site.block)]
        x = state.norms2d.double()  # (B, T), 0 at padding
        w = state.batch.fmask.double()
        if self._dev is None:
            self._dev = self._zeros(x)
        d, t = self._dev, x.shape[1]
        n_b = w.sum()
        mean_b = x.sum() / n_b.clamp_min(1)
        dev_b = x - mean_b
        if not state.batch.full:
            dev_b = dev_b * w
        d["n"][i], d["mean"][i], d["m2"][i] = chan_merge(d["n"][i], d["mean"][i], d["m2"][i],
                                                         n_b, mean_b, (dev_b ** 2).sum())
        d["n_pos"][i, :t] += w.sum(0)
        d["sum_pos"][i, :t] += x.sum(0)

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
