"""Mean state vectors, kept apart by any of site, sample and position."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import State
from generator.capture.sites import Site
from generator.reducers.base import Sums


class MeanState(Sums):
    """Mean state vector, kept apart by any of site / sample / position and averaged over the rest.

    `keep=("position",)` averages over samples and sites (one vector per position); `("site",
    "sample")` averages over positions. Samples beyond `max_samples` are ignored when `sample` is
    kept, so memory stays fixed; the finalized `count` shows what entered. A shard sums in
    float32 (a few batches of rows per slot: relative error around 1e-6, far below anything a
    chart or metric resolves), and shards add up in float64. These are the largest states
    (sites x positions x width: 160 MB for GPT-2's 26 residual sites x 1024 positions in
    float64), so the shard copy at half size keeps a many-shard run's memory near a one-shard
    run's.
    """

    kind = "mean_state"

    def __init__(self, sites: Iterable[Site], d_model: int, keep: tuple[str, ...],
                 seq_len: int = 1, max_samples: int = 1) -> None:
        super().__init__(sites)
        keep = tuple(keep)
        self.keep, self.seq_len = keep, seq_len
        self.params = {"d_model": d_model, "keep": list(keep), "seq_len": seq_len,
                       "max_samples": max_samples}
        self.dims = (len(self.sites) if "site" in keep else 1,
                     max_samples if "sample" in keep else 1,
                     seq_len if "position" in keep else 1)
        n_slots = int(np.prod(self.dims))
        self._state = {"sum": np.zeros((n_slots, d_model)), "count": np.zeros(n_slots)}

    def update(self, state: State) -> None:
        n_site, n_sample, n_pos = self.dims
        site_i = self.index[(state.site.point, state.site.block)] if n_site > 1 else 0
        fm = state.batch.fmask
        hm = state.h.float() if state.batch.full else state.h.float() * fm.unsqueeze(-1)
        t = hm.shape[1]  # hm: (B, T, D), zero at padding
        if self._dev is None:
            self._dev = self._zeros(hm, torch.float32)
        acc = self._dev["sum"].view(n_site, n_sample, n_pos, -1)[site_i]
        cnt = self._dev["count"].view(n_site, n_sample, n_pos)[site_i]
        if n_sample > 1:
            sel = state.batch.sample_ids < n_sample
            ids = state.batch.sample_ids[sel]
            if n_pos > 1:
                acc[ids, :t] += hm[sel]
                cnt[ids, :t] += fm[sel]
            else:  # reduce first, then pick the rows: no copy of the (B, T, D) states
                acc[ids, 0] += hm.sum(1)[sel]
                cnt[ids, 0] += fm.sum(1)[sel]
        elif n_pos > 1:
            acc[0, :t].add_(hm[0] if len(hm) == 1 else hm.sum(0))
            cnt[0, :t].add_(fm.sum(0))
        else:
            acc[0, 0].add_(hm.sum((0, 1)))
            cnt[0, 0].add_(fm.sum())

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(means shaped dims + (D,), counts shaped dims); empty slots are NaN."""
        st = self.arrays()
        c = st["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = st["sum"] / c[:, None]
        return m.reshape(*self.dims, -1), c.reshape(self.dims)
