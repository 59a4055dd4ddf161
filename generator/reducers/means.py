"""Mean state vectors, kept apart by any of site, sample and position."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import Batch, State
from generator.capture.sites import Site
from generator.reducers.base import Sums, unallocated_zeros


class MeanState(Sums):
    """Mean state vector, kept apart by any of site / sample / position and averaged over the rest.

    `keep=("position",)` averages over samples and sites (one vector per position); `("site",
    "sample")` averages over positions. Samples beyond `max_samples` are ignored when `sample` is
    kept, so memory stays fixed; the finalized `count` shows what entered. A shard sums in
    float32 (a few batches of rows per slot: relative error around 1e-6, far below anything a
    chart or metric resolves), and shards add up in float64. These are the largest states
    (sites x positions x width: 160 MB for GPT-2's 26 residual sites x 1024 positions in
    float64), so the shard copy at half size keeps a many-shard run's memory near a one-shard
    run's. With `min_position=k`, an average over positions leaves out positions before k
    (position 0, whose norm can dwarf the rest, would otherwise decide every such average).
    """

    kind = "mean_state"

    def __init__(self, sites: Iterable[Site], d_model: int, keep: tuple[str, ...],
                 seq_len: int = 1, max_samples: int = 1, min_position: int = 0) -> None:
        super().__init__(sites)
        keep = tuple(keep)
        self.keep, self.seq_len = keep, seq_len
        self.params = {"d_model": d_model, "keep": list(keep), "seq_len": seq_len,
                       "max_samples": max_samples}
        self.min_position = min_position if "position" not in keep else 0
        if self.min_position:  # only when set: configs (and cache keys) without it stay as they were
            self.params["min_position"] = self.min_position
        self.dims = (len(self.sites) if "site" in keep else 1,
                     max_samples if "sample" in keep else 1,
                     seq_len if "position" in keep else 1)
        n_slots = int(np.prod(self.dims))
        self._state = {"sum": unallocated_zeros((n_slots, d_model)),
                       "count": unallocated_zeros(n_slots)}
        self._batch: Batch | None = None
        self._seen: list[int] = []
        self._ids: tuple[torch.Tensor | slice, torch.Tensor | None] | None = None
        self._sel: dict[tuple[int, ...], torch.Tensor] = {}
        self._ones_cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._dst: dict[tuple[int, int], torch.Tensor] = {}
        """Per (site slot, positions): its view into the device sums, for as long as they live."""
        self._stale: set[int] = set()
        """Site slots whose device sums still hold the last shard's (`_clear`): the shard's first
        batch writes them instead of adding, and `end_batch` zeroes any that no batch reached."""

    def update(self, state: State) -> None:
        b = state.batch
        if self._batch is not None and b is not self._batch:
            self.end_batch()
        self._batch = b
        n_site, n_sample, n_pos = self.dims
        site_i = self.index[(state.site.point, state.site.block)] if n_site > 1 else 0
        self._seen.append(site_i)
        h = state.h if b.full else state.h * b.fmask.unsqueeze(-1)  # zero at padding
        if self.min_position:  # averaged over positions: leave the first ones out
            h = h[:, self.min_position:]
        if self._dev is None:
            self._dev = self._zeros(h, torch.float32)
            self._dst = {}
        t, f32 = h.shape[1], torch.float32
        dst = self._dst.get((site_i, t))
        if dst is None:
            dst = self._dest(site_i, t)
        if n_sample > 1:
            ids, rows = self._rows(b)
            part = h.to(f32) if n_pos > 1 else h.sum(1, dtype=f32)  # reduce before picking rows
            if rows is not None:
                part = part.index_select(0, rows)
            if isinstance(ids, slice):
                dst[ids].add_(part)
            else:
                dst.index_add_(0, ids, part)
        elif n_pos > 1:  # dst: (1, t * d)
            first = site_i in self._stale
            if first:  # the slot holds the last shard's sums: written over, not added to
                self._stale.discard(site_i)
                if t < n_pos:
                    self._slot(site_i)[t:].zero_()
            if h.dtype == f32 and h.is_contiguous():  # sum over the batch and add: one kernel
                dst.addmm_(self._ones(len(h), h.device), h.view(len(h), -1), beta=0 if first else 1)
            elif first:
                dst.copy_(h.sum(0, dtype=f32).view(1, -1))
            else:
                dst.add_(h.sum(0, dtype=f32).view(1, -1))
        else:
            dst.add_(h.sum((0, 1), dtype=f32))

    def _dest(self, site_i: int, t: int) -> torch.Tensor:
        """The site's view into the device sums for `t` positions, made once (not per batch).

        (samples, t, D) or (samples, D) when samples are kept; otherwise (1, t * D) for one
        product per batch, or (D,) when everything is pooled.
        """
        n_site, n_sample, n_pos = self.dims
        acc = self._dev["sum"].view(n_site, n_sample, n_pos, -1)[site_i]  # type: ignore[index]
        if n_sample > 1:
            view = acc[:, :t] if n_pos > 1 else acc[:, 0]
        else:
            view = acc[0, :t].view(1, -1) if n_pos > 1 else acc[0, 0]
        self._dst[(site_i, t)] = view
        return view

    def _slot(self, site_i: int) -> torch.Tensor:
        """(positions, D): a site slot's device sums (no samples kept)."""
        n_site, _, n_pos = self.dims
        return self._dev["sum"].view(n_site, n_pos, -1)[site_i]  # type: ignore[index]

    def _clear(self, dev: dict[str, torch.Tensor]) -> None:
        """Empty for the next shard; sums by position (no samples kept) are left as they are.

        The shard's first batch writes those (`update`), which saves writing them with zeros and
        reading those zeros back once per shard (126 MB for the suite at GPT-2-small x 1024
        positions: about 7 ms of a 2 x 1024 shard's 1.8 s on this project's CPU). The rest,
        small, are zeroed.
        """
        if not (self.dims[1] == 1 and self.dims[2] > 1):
            super()._clear(dev)
            return
        dev["count"].zero_()
        self._stale = set(range(self.dims[0]))

    def _ones(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._ones_cache:
            self._ones_cache[key] = torch.ones(1, n, device=device)
        return self._ones_cache[key]

    def _rows(self, b: Batch) -> tuple[torch.Tensor | slice, torch.Tensor | None]:
        """Device slot ids of the batch's rows kept (sample id < max_samples), and which rows.

        Decided on the host from the sample ids, once per batch: no boolean indexing (a sync).
        """
        if self._ids is None:
            ids = b.np_sample_ids
            ok = ids < self.dims[1]
            if ok.all() and len(ids) and (np.diff(ids) == 1).all():  # consecutive: a slice
                self._ids = (slice(int(ids[0]), int(ids[0]) + len(ids)), None)
            elif ok.all():
                self._ids = (b.sample_ids, None)
            else:
                rows = np.flatnonzero(ok)
                self._ids = (b.to_device(b.np_sample_ids[rows]), b.to_device(rows))
        return self._ids

    def end_batch(self) -> None:
        """The batch's counts, once for every site it reached (the same mask for all).

        Slots the shard's batches have not reached yet hold the last shard's sums until here:
        they are zeroed, as a reset would have (before anything reads or adds to them).
        """
        if self._stale:
            with torch.inference_mode():  # the sums are inference tensors; a merge may call this
                for i in sorted(self._stale):
                    self._slot(i).zero_()
            self._stale = set()
        b, seen = self._batch, self._seen
        if b is None or not seen:
            return
        n_site, n_sample, n_pos = self.dims
        every_site = n_site > 1 and len(seen) == n_site
        fm = b.fmask[:, self.min_position:] if self.min_position else b.fmask
        cnt = self._dev["count"].view(n_site, n_sample, n_pos)  # type: ignore[index]
        mult = len(seen) if n_site == 1 else 1  # sites pooled into one slot each add a count
        if n_sample > 1:
            ids, rows = self._rows(b)
            c = fm if n_pos > 1 else fm.sum(1, keepdim=True)
            if rows is not None:
                c = c.index_select(0, rows)
            if mult != 1:
                c = c * mult
            w = c.shape[1]
            if isinstance(ids, slice):
                if every_site or n_site == 1:
                    cnt[:, ids, :w] += c
                else:
                    for i in seen:
                        cnt[i, ids, :w] += c
            elif every_site or n_site == 1:
                cnt[:, :, :w].index_add_(1, ids, c.expand(n_site, *c.shape))
            else:
                for i in seen:
                    cnt[i, :, :w].index_add_(0, ids, c)
        else:
            c = fm.sum(0) if n_pos > 1 else fm.sum().reshape(1)
            if mult != 1:
                c = c * mult
            if every_site or n_site == 1:
                cnt[:, 0, :len(c)] += c
            else:
                key = tuple(seen)
                if key not in self._sel:
                    self._sel[key] = b.to_device(np.array(seen, np.int64))
                cnt[self._sel[key], 0, :len(c)] += c
        self._batch, self._seen, self._ids = None, [], None

    def reset(self) -> None:
        """Empty again; the device sums are kept (zeroed), and so are the views into them."""
        dst = self._dst if self._pristine and self._dev is not None else {}
        super().reset()
        if self._dev is not None:
            self._dst = dst

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(means shaped dims + (D,), counts shaped dims); empty slots are NaN."""
        st = self.arrays()
        c = st["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = st["sum"] / c[:, None]
        return m.reshape(*self.dims, -1), c.reshape(self.dims)
