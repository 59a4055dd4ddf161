"""Streaming covariance of pooled states, exact or from a fixed hashed subsample, for PCA."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import State
from generator.capture.sites import Site
from generator.reducers.base import Reducer, _np, chan_merge


def gram(c: torch.Tensor) -> torch.Tensor:
    """C^T C, on CPU through numpy's BLAS.

    OpenBLAS ran this shape 1.5-1.8x faster than torch's MKL on the AMD machines here (9k-16k x
    576, float32); bfloat16 and GPUs stay in torch.
    """
    if c.device.type == "cpu" and c.dtype in (torch.float32, torch.float64):
        a = c.numpy()
        return torch.from_numpy(a.T @ a)
    return c.T @ c


class Covariance(Reducer):
    """Mean and centered sum of outer products of the states pooled over `sites`, for exact PCA.

    `unit=True` normalizes each token first. `every=k` keeps the tokens whose (sample, position)
    hash falls in 1/k of the space: a fixed, shard-invariant subsample that costs 1/k of the
    matrix products. The rows a batch contributes from all sites are gathered into one
    preallocated pool (`POOL_BYTES`, reused for the whole run: a fresh block of that size per
    batch costs more in page faults than the product) and reduced by one product centered on
    their own mean, so float32 matmul loses nothing to a large offset, then merged in float64
    on the capture device. `drop_above=f` leaves out massive activations: tokens whose norm is
    above f x the median norm of their site's tokens in the batch (position 0 and a few tokens
    whose norm dwarfs the rest, which alone would decide the first components).
    """

    kind = "covariance"
    POOL_BYTES = 32 << 20
    """Rows pooled before one product: 32 MB of float32 (14.5k rows at width 576)."""

    def __init__(self, sites: Iterable[Site], d_model: int, unit: bool = False, every: int = 1,
                 min_position: int = 0, matmul_dtype: torch.dtype | str = torch.float32,
                 keep_above: float = 0.0, drop_above: float = 0.0) -> None:
        super().__init__(sites)
        if isinstance(matmul_dtype, str):
            matmul_dtype = getattr(torch, matmul_dtype)
        self.unit, self.every, self.matmul_dtype = unit, every, matmul_dtype
        self.min_position, self.keep_above = min_position, keep_above
        self.drop_above = drop_above
        self.params = {"d_model": d_model, "unit": unit, "every": every,
                       "min_position": min_position, "keep_above": keep_above,
                       "matmul_dtype": str(matmul_dtype).removeprefix("torch.")}
        if drop_above:  # only when set: configs (and cache keys) without it stay as they were
            self.params["drop_above"] = drop_above
        self._state = {"n": np.zeros(()), "mean": np.zeros(d_model),
                      "m2": np.zeros((d_model, d_model))}
        self.capacity = max(64, self.POOL_BYTES // (4 * d_model))
        self._buf: torch.Tensor | None = None
        self._wbuf: torch.Tensor | None = None
        self._pooled = 0
        self._stratified = every > 1 and keep_above > 0
        self._heavy_frac = self.HEAVY_FRACTION
        self._heavy_counts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._heavy_over: torch.Tensor | None = None
        self._heavy_need: torch.Tensor | None = None
        """Rows weigh 1 (heavy) or `every` (sampled); otherwise all weigh `every`."""

    HEAVY_FRACTION = 1 / 64
    """Rows reserved per site and batch for heavy tokens outside the hashed sample, as a fraction
    of the site's candidate tokens (grown by `regrow` when a shard needed more)."""

    def update(self, state: State) -> None:
        """Gather this site's rows into the pool, with weights, without any host sync.

        No Python loop over data-dependent sizes: every length is known on the host first.

        The hashed sample's indices come from the host. Heavy tokens (stratified) outside it are
        compacted on the device into a fixed number of rows (`nonzero_static`, padding weighs
        0); `regrow` reports, once per shard, whether that number was too small. Dropped tokens
        (`drop_above`) stay in place with weight 0: the same sums as leaving them out.
        """
        b, mp, every = state.batch, self.min_position, self.every
        n_cand = b.count(1, mp)
        if n_cand == 0:
            return
        idx, m = b.sample_index(every, mp)
        norms = state.norms2d.reshape(-1) if (self.unit or self._stratified
                                              or self.drop_above > 0) else None
        med = None
        if self._stratified or self.drop_above > 0:
            v = state.norms2d[:, mp:]
            med = v.median() if b.full else torch.where(b.mask[:, mp:], v, torch.nan).nanmedian()
        w = torch.full((m,), float(every), device=idx.device)
        if self._stratified:
            w = torch.where(norms.index_select(0, idx) >= self.keep_above * med, 1.0, w)
        if self.drop_above > 0:
            w = torch.where(norms.index_select(0, idx) <= self.drop_above * med, w, 0.0)
        if self._stratified and n_cand > m:
            k = min(n_cand - m, math.ceil(n_cand * self._heavy_frac) + 4)
            heavy = b.outside_sample(every, mp) & (state.norms2d >= self.keep_above * med)
            if self.drop_above > 0:
                heavy &= state.norms2d <= self.drop_above * med
            flat = heavy.reshape(-1)
            hidx = torch.nonzero_static(flat, size=k, fill_value=0).squeeze(1)
            count = flat.sum()
            hw = (torch.arange(k, device=flat.device) < count).float()
            self._heavy_counts.append((count - k, count / n_cand))
            idx, w, m = torch.cat([idx, hidx]), torch.cat([w, hw]), m + k
        src = state.h.reshape(-1, state.h.shape[-1])
        if self._buf is None:
            self._buf = torch.empty(self.capacity, src.shape[1], device=src.device)
            self._wbuf = torch.empty(self.capacity, device=src.device)
        done = 0
        while done < m:  # host-known sizes only
            if self._pooled == self.capacity:
                self._product()
            n = min(self.capacity - self._pooled, m - done)
            part = idx[done:done + n] if n < m else idx
            rows = self._buf[self._pooled:self._pooled + n]
            if src.dtype == rows.dtype:
                torch.index_select(src, 0, part, out=rows)
            else:
                rows.copy_(src.index_select(0, part))
            if self.unit:
                rows.div_(norms.index_select(0, part).clamp_min_(1e-12).unsqueeze(1))
            self._wbuf[self._pooled:self._pooled + n].copy_(w[done:done + n] if n < m else w)  # type: ignore[index]
            self._pooled += n
            done += n

    def regrow(self) -> bool:
        """Whether a batch had more heavy tokens than rows reserved (once per shard: one sync).

        If so the reservation grows to what was needed and the caller runs the shard again.
        """
        self._flush_counts()
        over, frac = self._heavy_over, self._heavy_need
        self._heavy_over = self._heavy_need = None
        if over is None or int(over) <= 0:
            return False
        self._heavy_frac = max(self._heavy_frac, float(frac) + 1e-9)
        return True

    def _flush_counts(self) -> None:
        if self._heavy_counts:
            over = torch.stack([o for o, _ in self._heavy_counts]).max()
            need = torch.stack([f for _, f in self._heavy_counts]).max()
            self._heavy_counts.clear()
            if self._heavy_over is None:
                self._heavy_over, self._heavy_need = over, need
            else:
                self._heavy_over = torch.maximum(self._heavy_over, over)
                self._heavy_need = torch.maximum(self._heavy_need, need)  # type: ignore[arg-type]

    def end_batch(self) -> None:
        """After the forward: the batch's heavy-row counts, then one product for its rows."""
        self._flush_counts()
        self._product()

    def _product(self) -> None:
        """One product for the rows the batch gave from every site (called after the forward).

        Rows carry weights (how many tokens each stands for), so n is a weighted count and the
        statistics are the Horvitz-Thompson estimates; with `every=1` every weight is 1. The
        rows stay float32 and are centered in place on their float32 weighted mean; the small
        remaining offset `delta` is measured and corrected exactly (M2 = C^T W C - n delta
        delta^T) in float64, so no float64 copy of the rows is ever made.
        """
        if not self._pooled:
            return
        x, w = self._buf[:self._pooled], self._wbuf[:self._pooled]  # type: ignore[index]
        self._pooled = 0
        n_b = w.double().sum()
        n_safe = n_b.clamp_min(1e-300)  # every row dropped (weight 0): adds nothing, no NaN
        center = (w @ x) / n_safe.float()
        x.sub_(center)
        delta = (w @ x).double() / n_safe
        if self._stratified:
            x.mul_(w.sqrt().unsqueeze(1))
        elif self.drop_above > 0:  # weights are `every` or 0 (dropped): keep the exact multiply
            x.mul_((w > 0).unsqueeze(1))
        m2_b = gram(x.to(self.matmul_dtype)).double()
        if not self._stratified:
            m2_b *= float(self.every)
        m2_b.addr_(delta * -n_b, delta)
        mean_b = center.double() + delta
        d = self._dev
        if d is None:
            self._dev = {"n": n_b, "mean": mean_b, "m2": m2_b}
            return
        d["n"], d["mean"], d["m2"] = chan_merge(d["n"], d["mean"], d["m2"], n_b, mean_b, m2_b,
                                                outer=True, in_place=True)

    def reset(self) -> None:
        """Empty again; the row pool is kept (it holds nothing between batches)."""
        buf, wbuf, frac = self._buf, self._wbuf, self._heavy_frac
        super().reset()
        self._buf, self._wbuf, self._heavy_frac = buf, wbuf, frac

    def _fold(self) -> None:
        self.end_batch()
        if self._dev is not None:
            self._merge_arrays({k: _np(v) for k, v in self._dev.items()})
            self._dev = None

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        a = self._state
        a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                b["n"], b["mean"], b["m2"], outer=True)

    def covariance(self) -> np.ndarray:
        st = self.arrays()
        return st["m2"] / max(float(st["n"]) - 1.0, 1.0)
