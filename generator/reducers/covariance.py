"""Streaming covariance of pooled states, exact or from a fixed hashed subsample, for PCA."""

from __future__ import annotations

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
    on the capture device.
    """

    kind = "covariance"
    POOL_BYTES = 32 << 20
    """Rows pooled before one product: 32 MB of float32 (14.5k rows at width 576)."""

    def __init__(self, sites: Iterable[Site], d_model: int, unit: bool = False, every: int = 1,
                 min_position: int = 0, matmul_dtype: torch.dtype | str = torch.float32,
                 keep_above: float = 0.0) -> None:
        super().__init__(sites)
        if isinstance(matmul_dtype, str):
            matmul_dtype = getattr(torch, matmul_dtype)
        self.unit, self.every, self.matmul_dtype = unit, every, matmul_dtype
        self.min_position, self.keep_above = min_position, keep_above
        self.params = {"d_model": d_model, "unit": unit, "every": every,
                       "min_position": min_position, "keep_above": keep_above,
                       "matmul_dtype": str(matmul_dtype).removeprefix("torch.")}
        self._state = {"n": np.zeros(()), "mean": np.zeros(d_model),
                      "m2": np.zeros((d_model, d_model))}
        self.capacity = max(64, self.POOL_BYTES // (4 * d_model))
        self._buf: torch.Tensor | None = None
        self._wbuf: torch.Tensor | None = None
        self._pooled = 0
        self._stratified = every > 1 and keep_above > 0
        """Rows weigh 1 (heavy) or `every` (sampled); otherwise all weigh `every`."""

    def update(self, state: State) -> None:
        b = state.batch
        keep = b.mask
        if self.min_position > 0 or self.every > 1:
            keep = b.subsample(self.every, self.min_position)
        heavy = None
        if self._stratified:
            # Norm-stratified: tokens far above this site's median norm are always kept (weight 1),
            # the rest are the hashed 1 in `every` (weight `every`): heavy tails stay exact.
            valid = b.subsample(1, self.min_position)
            norms = state.norms2d
            heavy = valid & (norms >= self.keep_above * norms[valid].median())
            keep = keep | heavy
        idx = keep.reshape(-1).nonzero().squeeze(1)
        src = state.h.reshape(-1, state.h.shape[-1])
        if self._buf is None:
            self._buf = torch.empty(self.capacity, src.shape[1], device=src.device)
            self._wbuf = torch.empty(self.capacity, device=src.device)
        done = 0
        while done < len(idx):
            if self._pooled == self.capacity:
                self.end_batch()
            m = min(self.capacity - self._pooled, len(idx) - done)
            part = idx[done:done + m]
            rows = self._buf[self._pooled:self._pooled + m]
            if src.dtype == rows.dtype:
                torch.index_select(src, 0, part, out=rows)
            else:
                rows.copy_(src.index_select(0, part))
            if self.unit:
                rows.div_(state.norms2d.reshape(-1)[part].clamp_min(1e-12).unsqueeze(1))
            weights = self._wbuf[self._pooled:self._pooled + m]  # type: ignore[index]
            weights.fill_(float(self.every))
            if heavy is not None:
                weights.masked_fill_(heavy.reshape(-1)[part], 1.0)
            self._pooled += m
            done += m

    def end_batch(self) -> None:
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
        center = (w @ x) / n_b.float()
        x.sub_(center)
        delta = (w @ x).double() / n_b
        if self._stratified:
            x.mul_(w.sqrt().unsqueeze(1))
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
        buf, wbuf = self._buf, self._wbuf
        super().reset()
        self._buf, self._wbuf = buf, wbuf

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
