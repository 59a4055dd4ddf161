"""Streaming, mergeable statistics over captured states: memory is fixed by the suite, not the corpus.

Every reducer has `wants(site)`, `update(state)`, `merge(other)` (exact: shards combine to the
same numbers as one pass, up to rounding), `reset()` (empty again, buffers kept, for the next
shard) and `arrays()`/`load()` so a shard's state can be written as `.npz` + JSON and merged on
another machine. Moments use the pairwise update of (n, mean, M2) in float64 (Chan et al.),
never raw sums of x and x x^T.

Hot path: updates run during the forward pass, so they use dense masked reductions on the
(B, T, D) tensor and accumulate on the capture device (torch tensors: on CUDA nothing leaves the
GPU per batch; float64, except the per-shard sums of `MeanState`, float32). The numpy `state` is
the canonical, serializable float64 form; device sums are folded into it by `arrays()`,
`merge()` and `load()`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from generator.capture import State
from generator.points import Site

HIST_EDGES = np.linspace(-3.0, 6.0, 181)  # log10(norm) bins: 1e-3 .. 1e6, 0.05 decades each


def chan_merge(n_a: Any, mean_a: Any, m2_a: Any, n_b: Any, mean_b: Any, m2_b: Any,
               outer: bool = False, in_place: bool = False) -> tuple[Any, Any, Any]:
    """Combine two (n, mean, M2) summaries (numpy or torch alike); `outer` for a covariance M2.

    `in_place` (torch covariances) updates `mean_a` and `m2_a` and returns them: no d x d
    temporaries, which on the capture hot path cost a page fault per 4 KB.
    """
    is_torch = isinstance(n_a, torch.Tensor)
    n = n_a + n_b
    w = n_b / (n.clamp_min(1) if is_torch else np.maximum(n, 1))  # n is a count: 0 or >= 1
    delta = mean_b - mean_a
    f = n_a * w
    if in_place:
        mean_a.add_(delta * w)
        return n, mean_a, m2_a.add_(m2_b).addr_(delta * f, delta)
    mean = mean_a + delta * (w[..., None] if delta.ndim > w.ndim else w)
    if outer:
        m2 = m2_a + m2_b + (torch.outer if is_torch else np.outer)(delta, delta) * f
    else:
        m2 = m2_a + m2_b + delta * delta * f
    return n, mean, m2


class Reducer:
    """Base: a set of sites, numpy state in `self._state`, device sums in `self._dev` until folded."""

    kind: ClassVar[str] = "reducer"

    def __init__(self, sites: Iterable[Site]) -> None:
        self.sites = sorted(set(sites))
        self.index = {(s.point, s.block): i for i, s in enumerate(self.sites)}
        self._state: dict[str, np.ndarray] = {}
        self.params: dict[str, Any] = {}
        """Constructor arguments besides `sites`, JSON-able: `from_config` rebuilds an empty twin."""
        self._dev: dict[str, torch.Tensor] | None = None
        self._pristine = True
        """Nothing folded, merged or loaded yet: the numpy state is all zeros."""

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The canonical numpy state, with any device-side partial sums folded in first."""
        self._fold()
        return self._state

    def wants(self, site: Site) -> bool:
        return (site.point, site.block) in self.index

    def update(self, state: State) -> None:
        raise NotImplementedError

    def _fold(self) -> None:
        """Merge the device-side partial state into `self._state` and drop it."""
        self._dev = None

    def merge(self, other: Reducer, consume: bool = False) -> None:
        """Add `other`'s statistics; with `consume` its arrays may be taken over (no copy)."""
        self._fold()
        b, lent = other._partials()
        self._merge_arrays(b, consume and not lent)

    def _partials(self) -> tuple[dict[str, np.ndarray], bool]:
        """The arrays to merge elsewhere, and whether they are live device buffers.

        Live buffers will be zeroed and reused by `reset`, so a merge must copy them, never
        adopt them.
        """
        return self.arrays(), False

    def reset(self) -> None:
        """Empty again, for the next shard (the executor reuses one set of shard reducers)."""
        self.__dict__.update(from_config(self.config()).__dict__)

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "sites": [[s.depth, s.point, s.block] for s in self.sites],
                **self.params}

    def arrays(self) -> dict[str, np.ndarray]:
        self._fold()
        return dict(self._state)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._dev, self._pristine = None, False
        for k in self._state:
            self._state[k] = np.asarray(arrays[k], dtype=self._state[k].dtype)

    def _zeros(self, like: torch.Tensor,
               dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        """Device accumulators shaped like the numpy state (`dtype`, int64 for counts of bins)."""
        return {k: torch.zeros(v.shape, dtype=torch.int64 if v.dtype == np.int64 else dtype,
                               device=like.device) for k, v in self._state.items()}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy()


def _add_into(r: Reducer, b: dict[str, np.ndarray], adopt: bool) -> None:
    """Sum-type state += b, in place (states can be hundreds of MB: no new arrays per merge).

    A reducer that holds nothing yet takes `b` as its state, bitwise what adding it to zeros
    gives: its own arrays when `adopt` (device sums it owns), a copy otherwise.
    """
    if r._pristine:
        r._state = {k: b[k].astype(v.dtype, copy=False) if adopt else np.array(b[k], v.dtype)
                    for k, v in r._state.items()}
    else:  # numpy: 3x faster than torch's add_ for float64 += float32 (measured, 10M values)
        for k, v in r._state.items():
            np.add(v, b[k], out=v)
    r._pristine = False


class NormStats(Reducer):
    """Per site: mean/variance/histogram of token norms overall and per sequence position."""

    kind = "norm_stats"

    def __init__(self, sites: Iterable[Site], seq_len: int) -> None:
        super().__init__(sites)
        s, t = len(self.sites), seq_len
        self.seq_len = seq_len
        self.params = {"seq_len": seq_len}
        self._state = {"n": np.zeros(s), "mean": np.zeros(s), "m2": np.zeros(s),
                      "hist": np.zeros((s, len(HIST_EDGES) - 1), np.int64),
                      "n_pos": np.zeros((s, t)), "mean_pos": np.zeros((s, t)),
                      "m2_pos": np.zeros((s, t))}
        self._edges: torch.Tensor | None = None

    def update(self, state: State) -> None:
        i = self.index[(state.site.point, state.site.block)]
        x = state.norms2d.double()  # (B, T), 0 at padding
        m = state.batch.mask
        w = state.batch.fmask.double()
        if self._dev is None:
            self._dev = self._zeros(x)
            self._edges = torch.as_tensor(HIST_EDGES[1:-1], device=x.device)
        d, t = self._dev, x.shape[1]
        n_p = w.sum(0)
        mean_p = x.sum(0) / n_p.clamp_min(1)
        dev_p, dev_b = x - mean_p, x - x.sum() / n_p.sum().clamp_min(1)
        if not state.batch.full:
            dev_p, dev_b = dev_p * w, dev_b * w
        m2_p = (dev_p ** 2).sum(0)
        n_b = n_p.sum()
        mean_b = x.sum() / n_b.clamp_min(1)
        m2_b = (dev_b ** 2).sum()
        d["n"][i], d["mean"][i], d["m2"][i] = chan_merge(d["n"][i], d["mean"][i], d["m2"][i],
                                                         n_b, mean_b, m2_b)
        sl = slice(0, t)
        d["n_pos"][i, sl], d["mean_pos"][i, sl], d["m2_pos"][i, sl] = chan_merge(
            d["n_pos"][i, sl], d["mean_pos"][i, sl], d["m2_pos"][i, sl], n_p, mean_p, m2_p)
        logs = torch.log10((x if state.batch.full else x[m]).clamp_min(1e-30)).reshape(-1)
        bins = torch.bucketize(logs, self._edges, right=True)  # [e_i, e_i+1), ends clipped
        d["hist"][i] += torch.bincount(bins, minlength=len(HIST_EDGES) - 1)

    def _fold(self) -> None:
        if self._dev is not None:
            self._merge_arrays({k: _np(v) for k, v in self._dev.items()})
            self._dev = None

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        a = self._state
        a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                b["n"], b["mean"], b["m2"])
        a["n_pos"], a["mean_pos"], a["m2_pos"] = chan_merge(
            a["n_pos"], a["mean_pos"], a["m2_pos"], b["n_pos"], b["mean_pos"], b["m2_pos"])
        a["hist"] = a["hist"] + b["hist"]

    def variance(self) -> np.ndarray:
        n = self.arrays()["n"]
        return np.divide(self._state["m2"], n - 1, out=np.zeros_like(n), where=n > 1)


class _Sums(Reducer):
    """Reducers whose state is plain sums: folding and merging are additions, done in place."""

    def _fold(self) -> None:
        if self._dev is not None:
            dev, self._dev = self._dev, None
            _add_into(self, {k: _np(v) for k, v in dev.items()}, adopt=True)

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        _add_into(self, b, adopt=consume)

    def _partials(self) -> tuple[dict[str, np.ndarray], bool]:
        """A shard's device sums as they are (float32 for MeanState), to add into the total.

        No float64 copy of the shard is made, so a run holds the float64 total plus one shard at
        its own precision, whatever the number of shards.
        """
        if self._pristine and self._dev is not None:
            return {k: _np(v) for k, v in self._dev.items()}, True
        return self.arrays(), False

    def reset(self) -> None:
        """Empty again, keeping the device buffers, zeroed in place.

        Fresh ones for every shard cost a page fault per 4 KB (a third of a second per shard at
        SmolLM2's 4 x 512).
        """
        dev = self._dev if self._pristine else None
        super().reset()
        if dev is not None:
            with torch.inference_mode():  # they were made inside it, by the capture
                for v in dev.values():
                    v.zero_()
            self._dev = dev


class MeanState(_Sums):
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
        self.keep, self.seq_len = tuple(keep), seq_len
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


def _s64(c: int) -> int:
    c &= (1 << 64) - 1
    return c - (1 << 64) if c >= 1 << 63 else c


def _lsr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def token_hash(sample: torch.Tensor, pos: torch.Tensor, salt: int) -> torch.Tensor:
    """A fixed pseudo-random 62-bit key per (sample, position, salt): splitmix64 on int64."""
    x = sample.long() * 1_000_003 + pos.long() + _s64(salt * 0x9E3779B97F4A7C15)
    x = x * _s64(0x9E3779B97F4A7C15)
    x = (x ^ _lsr(x, 30)) * _s64(0xBF58476D1CE4E5B9)
    x = (x ^ _lsr(x, 27)) * _s64(0x94D049BB133111EB)
    return (x ^ _lsr(x, 31)) & ((1 << 62) - 1)


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


class SampleNorms(_Sums):
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
KINDS: dict[str, type[Reducer]] = {c.kind: c for c in (NormStats, MeanState, Covariance, Reservoir,
                                                       SampleNorms)}


def from_config(config: dict[str, Any]) -> Reducer:
    """An empty reducer equal in kind, sites and parameters to the one that wrote `config`."""
    params = dict(config)
    cls = KINDS[params.pop("kind")]
    sites = [Site(int(d), str(p), int(b)) for d, p, b in params.pop("sites")]
    if "keep" in params:
        params["keep"] = tuple(params["keep"])
    return cls(sites, **params)


def dump_states(reducers: list[Reducer]) -> bytes:
    """Reducer states as one `.npz` (arrays) with their configs as JSON inside: no pickle."""
    meta = json.dumps([r.config() for r in reducers], sort_keys=True).encode()
    arrays = {f"r{i}.{k}": v for i, r in enumerate(reducers) for k, v in r.arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(meta, dtype=np.uint8), **arrays)
    return buf.getvalue()


def load_states(blob: bytes) -> list[Reducer]:
    """The reducers `dump_states` wrote, ready to `merge` (pickle is refused on load)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        reducers = [from_config(c) for c in meta]
        for i, r in enumerate(reducers):
            r.load({k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(f"r{i}.")})
    return reducers


def save_states(path: Path, reducers: list[Reducer]) -> None:
    """Write a shard's states to a file, to be merged later, possibly on another machine."""
    from generator.artifacts import write_bytes_atomic

    write_bytes_atomic(path, dump_states(reducers))


def merge_states(into: list[Reducer], shard: list[Reducer], consume: bool = True) -> None:
    """Merge a shard's reducers into `into`, refusing states made for others.

    `consume`: the shard's arrays are used up (may be adopted); otherwise they are only read,
    and the shard's reducers can be `reset` and reused.
    """
    if [r.config() for r in into] != [r.config() for r in shard]:
        raise ValueError("shard states were made for different reducers (suite or model changed)")
    for acc, part in zip(into, shard, strict=True):
        acc.merge(part, consume=consume)
