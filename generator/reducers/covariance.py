"""Streaming covariance of pooled states, exact or from a fixed hashed subsample, for PCA."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from generator.capture.batch import Batch, State
from generator.capture.sites import Site
from generator.reducers.base import (
    Reducer,
    _np,
    chan_merge,
    chan_merge_into,
    chan_merge_taking,
    unallocated_zeros,
)


class Covariance(Reducer):
    """Mean and centered sum of outer products of the states pooled over `sites`, for exact PCA.

    `unit=True` normalizes each token first. `every=k` keeps the tokens whose (sample, position)
    hash falls in 1/k of the space: a fixed, shard-invariant subsample that costs 1/k of the
    matrix products. The rows a batch contributes from all sites are gathered into one
    preallocated pool (`POOL_BYTES`, reused for the whole run: a fresh block of that size per
    batch costs more in page faults than the product; a batch with more rows than it holds
    makes more than one product), centered on the shard's first rows'
    mean (so float32 matmul loses nothing to a large offset) and added by one in-place product
    into a float32 accumulator; it is folded into the float64 totals once per shard (`_close`).
    `drop_above=f` leaves out massive activations: tokens whose norm is
    above f x the median norm of their site's tokens in the batch (position 0 and a few tokens
    whose norm dwarfs the rest, which alone would decide the first components).
    """

    kind = "covariance"
    POOL_BYTES = 4 << 20
    """Rows pooled before one product on the CPU: 4 MB of float32 (1,820 rows at width 576).

    Small, because on the CPU a product costs the same per row from about 1,400 rows up (1.1,
    1.0, 1.0 and 1.0 us per row at 10,922, 5,461, 2,730 and 1,365 rows of width 768 in
    bfloat16; 3.8-3.9 us in float32), while the pool and the per-product temporaries (its
    bfloat16 copy, the rows' gathers) sit in the heap the forward allocates from: with 32 MB
    pools the suite's five covariances held 160 MB there, and the peak RSS of the bench's 32 x
    1024-token GPT-2-small capture was 2,370 MB against 2,022 MB with 4 MB pools (2,121 MB at 8
    MB; means of three runs each, 2026-11-28; the forward alone peaks at 1,348 MB). Smaller
    products also round smaller sums in bfloat16: every token's bfloat16 covariance of
    SmolLM2's attention/MLP outputs is 7x closer to the float32 one (4.5e-4 against 3.1e-3).
    """
    GPU_POOL_BYTES = 32 << 20
    """On a GPU: fewer, larger products (each is a dozen kernel launches; memory is plentiful)."""

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
        self._state = {"n": np.zeros(()), "mean": unallocated_zeros(d_model),
                       "m2": unallocated_zeros((d_model, d_model))}  # replaced by a merge
        self._owns_totals = False
        """Whether `_state`'s mean and M2 are arrays this reducer made, which later merges write
        into (`chan_merge_into`): not these zeros, nor arrays lent by `load`'s caller."""
        self.capacity = max(64, self.POOL_BYTES // (4 * d_model))
        self._buf: torch.Tensor | None = None
        self._wbuf: torch.Tensor | None = None
        self._pooled = 0
        self._g: torch.Tensor | None = None
        """The open accumulation's sum of weighted outer products (kept across shards, zeroed)."""
        self._acc: dict[str, torch.Tensor] | None = None
        self._acc_rows = 0
        self._stratified = every > 1 and keep_above > 0
        self._heavy_frac = self.HEAVY_FRACTION
        self._heavy_counts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._heavy_over: torch.Tensor | None = None
        self._heavy_need: torch.Tensor | None = None
        """Rows weigh 1 (heavy) or `every` (sampled); otherwise all weigh `every`."""
        self._bufs: dict[str, torch.Tensor] = {}
        """Per-batch buffers (`_scratch`), kept across batches and shards."""
        self._seg: dict | None = None
        """The current batch's rows in the pool, for `_finalize`: its sites' norms, heavy rows."""

    HEAVY_FRACTION = 1 / 32
    """Rows reserved per site and batch for heavy tokens outside the hashed sample, as a fraction
    of the site's candidate tokens, plus 4 (grown by `regrow` when a shard needed more, which
    runs that shard again). SmolLM2-135M's attention and MLP outputs on the suite's text need
    1.9% (tokens above 3x their site's median norm, dropped ones included): at 1/64 the first
    shard of every run was run twice, 4 extra batches in the suite's 8; the 1/32 reserve costs
    about a tenth more rows in that one covariance's products."""

    def update(self, state: State) -> None:
        """Gather this site's rows into the pool: one row gather, nothing else per site.

        No host sync and no Python loop over data-dependent sizes: every length is known on the
        host first. What depends on the rows' norms (unit scaling, the weights of `keep_above`
        and `drop_above`, the site medians they compare with) is done for every site of the
        batch at once, in `_finalize`, before the pool's product: a dozen operators per batch
        instead of a dozen per site (on a GPU each is a kernel launch).

        The hashed sample's indices come from the host. Heavy tokens (stratified) outside it
        take a fixed number k of rows: the site's k largest norms outside the sample (`topk`,
        no median needed yet); `_finalize` weighs each 1 if it is heavy (>= `keep_above` x the
        median, and not above `drop_above` x it) and 0 otherwise. Every heavy token is among
        them unless more than k tokens are above `keep_above` x the median; `regrow` reports,
        once per shard, whether that happened. Dropped tokens (`drop_above`) stay in place with
        weight 0: the same sums as leaving them out.
        """
        b = state.batch
        if b.count(1, self.min_position) == 0:
            return
        if self._seg is None or self._seg["batch"] is not b:  # a caller that skipped
            self.begin_batch(b)  # `begin_batch` (and perhaps the last `end_batch`)
        seg = self._seg
        assert seg is not None  # the batch has candidates
        j, k, idx = seg["sites"], seg["k"], seg["idx"]
        seg["sites"] += 1
        if self._per_row:
            seg["norm_list"].append(state.norms2d)
        if k:  # the k largest norms outside the sample (-1: not a candidate, never heavy)
            outside = b.outside_sample(self.every, self.min_position)
            cand = torch.where(outside, state.norms2d, -1.0)
            torch.topk(cand.reshape(-1), k, out=(seg["hvals"][j], seg["hidx"][j]))
            idx = torch.cat([idx, seg["hidx"][j]])
        src = state.flat
        total, done = seg["m"] + k, 0
        while done < total:  # host-known sizes only
            if self._pooled == self.capacity:
                self._product()
            n = min(self.capacity - self._pooled, total - done)
            part = idx[done:done + n] if n < total else idx
            rows = self._buf[self._pooled:self._pooled + n]
            if src.dtype == rows.dtype:
                torch.index_select(src, 0, part, out=rows)
            else:
                rows.copy_(src.index_select(0, part))
            self._pooled += n
            seg["pooled"] += n
            done += n

    def begin_batch(self, b: Batch) -> None:
        """Before the forward: the batch's sample, and the buffers its sites will write into.

        Everything a site leaves for the end of the batch (its norms, its heavy candidates) goes
        into buffers made here, once per batch shape, not into tensors made during the forward:
        small tensors made there and kept until the batch ends split the holes the forward's
        freed temporaries leave in the heap (glibc), so its next temporaries take fresh pages
        at the heap's top. The run-long buffers (the row pool, the products' accumulator) are
        made here too, before the first forward: made by its first sites (as they were, 19 MB
        for the suite's three GPT-2-small covariances, torch profiler), they sat for the whole
        run in the holes that forward's earlier blocks had freed.
        """
        if self._seg is not None:
            self._end_rows()
        self._seg = self._new_seg(b)
        if self._seg is not None:
            self._run_buffers(b.device)

    def _run_buffers(self, device: torch.device) -> None:
        """The row pool and the products' accumulator, made once (kept across shards)."""
        d = int(self.params["d_model"])
        if self._buf is None:
            self.capacity = self._pool_rows(device)
            self._buf = torch.empty(self.capacity, d, device=device)
            self._wbuf = torch.empty(self.capacity, device=device)
        if self._g is None:
            self._g = torch.zeros(d, d, device=device,
                                  dtype=torch.promote_types(self.matmul_dtype, self._buf.dtype))

    def _new_seg(self, b: Batch) -> dict | None:
        """The batch's bookkeeping: its hashed sample (m tokens), k heavy rows per site, buffers.

        None when the batch has no candidate token (every site's update then returns at once).
        """
        mp, n_cand, s = self.min_position, b.count(1, self.min_position), len(self.sites)
        if n_cand == 0:
            return None
        idx, m = b.sample_index(self.every, mp)
        k = (min(n_cand - m, math.ceil(n_cand * self._heavy_frac) + 4)
             if self._stratified and n_cand > m else 0)
        seg = {"batch": b, "idx": idx, "m": m, "k": k, "n_cand": n_cand, "sites": 0,
               "pooled": 0, "done": 0}
        if self._per_row:
            seg["norm_list"] = []
            seg["norms"] = self._scratch("norms", (s, *b.mask.shape), torch.float32, b.device)
        if k:
            seg["hvals"] = self._scratch("hvals", (s, k), torch.float32, b.device)
            seg["hidx"] = self._scratch("hidx", (s, k), torch.int64, b.device)
        return seg

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
        """A per-batch buffer, reused while the batch shape stays (its contents last one batch)."""
        t = self._bufs.get(name)
        if t is None or t.shape != shape or t.device != device:
            t = self._bufs[name] = torch.empty(shape, dtype=dtype, device=device)
        return t

    def _pool_rows(self, device: torch.device) -> int:
        """Rows the pool holds on `device`: `capacity` (`POOL_BYTES`) on the CPU, more elsewhere.

        At least `GPU_POOL_BYTES` of rows off the CPU, where fewer products mean fewer launches.
        """
        if device.type == "cpu":
            return self.capacity
        return max(self.capacity, self.GPU_POOL_BYTES // (4 * int(self.params["d_model"])))

    @property
    def _per_row(self) -> bool:
        """Whether rows need their norms (unit scaling, or weights that compare with a median)."""
        return self.unit or self._stratified or self.drop_above > 0

    def _finalize(self) -> None:
        """Weights and unit scaling of the batch's newly pooled rows, for all its sites at once.

        The batch's sites are laid out alike in the pool: each gives its m hashed rows, then its
        k heavy ones, so row g of the batch is row g % (m + k) of site g // (m + k); only rows
        from `done` on are still to do (a product mid-batch finalized the rest).
        """
        seg = self._seg
        if seg is None or seg["done"] == seg["pooled"]:
            return
        g0, g1 = seg["done"], seg["pooled"]
        p1 = self._pooled
        p0 = p1 - (g1 - g0)
        wdst = self._wbuf[p0:p1]  # type: ignore[index]
        seg["done"] = g1
        with torch.inference_mode():  # the pool is an inference tensor
            if not self._per_row:
                wdst.fill_(float(self.every))
                return
            m, s = seg["m"], seg["sites"]
            norms = self._stacked(seg)  # (S, B, T)
            bt = norms[0].numel()
            tok = seg["idx"].expand(s, m)
            if seg["k"]:
                tok = torch.cat([tok, seg["hidx"][:s]], 1)
            base = torch.arange(0, s * bt, bt, device=norms.device).unsqueeze(1)
            rn = norms.view(-1).index_select(0, (tok + base).reshape(-1))  # (S * (m + k))
            w = torch.full((s, m), float(self.every), device=norms.device)
            if self._stratified or self.drop_above > 0:
                med = self._medians(seg, norms).unsqueeze(1)
                rs = rn.view(s, -1)[:, :m]
                if self._stratified:
                    w = torch.where(rs >= self.keep_above * med, 1.0, w)
                if self.drop_above > 0:
                    w = torch.where(rs <= self.drop_above * med, w, 0.0)
            if seg["k"]:  # a site's k largest outside the sample: 1 if heavy, else 0
                w = torch.cat([w, self._heavy(seg["hvals"][:s], med).float()], 1)
            wdst.copy_(w.reshape(-1)[g0:g1])
            if self.unit:
                self._buf[p0:p1].div_(rn[g0:g1].clamp_min(1e-12).unsqueeze(1))  # type: ignore[index]

    @staticmethod
    def _stacked(seg: dict) -> torch.Tensor:
        """(S, B, T) norms of the batch's sites so far; each site's copied into its buffer once."""
        s, done = len(seg["norm_list"]), seg.get("stacked_sites", 0)
        if done != s:
            torch.stack(seg["norm_list"][done:], out=seg["norms"][done:s])
            seg["stacked_sites"] = s
        return seg["norms"][:s]

    def _medians(self, seg: dict, norms: torch.Tensor) -> torch.Tensor:
        """(S,) median norm of each site of the batch so far.

        Kept for the next call, which computes only the sites added since: a pool that fills
        mid-batch calls this again with more sites, and recomputing every site's median each
        time did about four times the medians a batch needs (SmolLM2 4 x 512: 10 ms per batch).
        Each site's median is its own, so the two ways agree bitwise.
        """
        done = seg.get("med_sites", 0)
        if done != len(norms):
            new = _median_norms(seg["batch"], norms[done:], self.min_position)
            seg["med"] = torch.cat([seg["med"], new]) if done else new
            seg["med_sites"] = len(norms)
        return seg["med"]

    def _heavy(self, norms: torch.Tensor, med: torch.Tensor) -> torch.Tensor:
        """Heavy: at least `keep_above` x the site's median norm, and not dropped."""
        heavy = norms >= self.keep_above * med
        if self.drop_above > 0:
            heavy &= norms <= self.drop_above * med
        return heavy

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
        self._end_rows()
        self._flush_counts()
        self._product()

    def _end_rows(self) -> None:
        """Finalize the batch's pooled rows and note the rows its heavy tokens needed (`regrow`).

        A site's k rows hold every heavy token if at most k of its tokens outside the sample
        reach `keep_above` x its median (dropped ones, above `drop_above` x it, take rows too).
        """
        seg = self._seg
        if seg is None:
            return
        self._finalize()
        if seg["k"] and seg["sites"]:
            norms = self._stacked(seg)
            med = self._medians(seg, norms)[:, None, None]
            b = seg["batch"]
            above = (norms >= self.keep_above * med) & b.outside_sample(self.every,
                                                                         self.min_position)
            top = above.sum((1, 2)).max()
            self._heavy_counts.append((top - seg["k"], top / seg["n_cand"]))
        self._seg = None

    def _product(self) -> None:
        """Add the pooled rows to the open accumulation: one in-place product, no new d x d array.

        Rows carry weights (how many tokens each stands for), so n is a weighted count and the
        statistics are the Horvitz-Thompson estimates; with `every=1` every weight is 1. The
        first rows of an accumulation fix its center (their weighted mean); every later row is
        centered on it in float32, in place, so float32 products lose nothing to a large offset,
        and `G += C^T C` runs in place on the capture device (torch: on CPU, numpy's BLAS would
        leave its threads spinning against torch's and slow the next forward down by more than
        it saves). The weighted sum of the centered rows is kept in float64; `_close` turns
        (n, s, G) into (n, mean, M2) exactly (M2 = G - s s^T / n).
        """
        self._finalize()
        if not self._pooled:
            return
        with torch.inference_mode():  # the pool and accumulator are inference tensors
            self._add_pool()

    def _add_pool(self) -> None:
        x, w = self._buf[:self._pooled], self._wbuf[:self._pooled]  # type: ignore[index]
        rows, self._pooled = self._pooled, 0
        acc = self._acc
        if acc is None:
            self._g.zero_()  # type: ignore[union-attr]
            ws = w.sum()  # all rows dropped (weight 0): their plain mean still centers well
            center = torch.where(ws > 0, (w @ x) / ws.clamp_min(1e-30), x.mean(0))
            acc = self._acc = {"center": center, "n": w.sum(dtype=torch.float64),
                               "s": torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)}
        else:
            acc["n"] += w.sum(dtype=torch.float64)
        x.sub_(acc["center"])
        acc["s"] += (w @ x).double()
        if self._stratified:
            x.mul_(w.sqrt().unsqueeze(1))
        elif self.drop_above > 0:  # weights are `every` or 0 (dropped): keep the exact multiply
            x.mul_((w > 0).unsqueeze(1))
        g, c = self._g, x if x.dtype == self.matmul_dtype else x.to(self.matmul_dtype)
        e = self._edges(x.shape[1])
        for i in range(len(e) - 1):  # the upper block triangle: `_close` mirrors it
            part, rest = c[:, e[i]:e[i + 1]], c[:, e[i]:]
            if c.dtype == g.dtype:  # type: ignore[union-attr]
                g[e[i]:e[i + 1], e[i]:].addmm_(part.T, rest)  # type: ignore[index]
            else:  # a lower-precision product, summed at the accumulator's precision
                g[e[i]:e[i + 1], e[i]:] += part.T @ rest  # type: ignore[index]
        self._acc_rows += rows
        if self._acc_rows >= self.CLOSE_ROWS:
            self._close()

    BLOCKS = 4
    """C^T C is symmetric: only the blocks on and above the diagonal of a 4 x 4 block grid are
    multiplied (10 of 16: 1.45x faster than the full product at width 768, measured)."""

    @staticmethod
    def _edges(d: int) -> list[int]:
        k = max(1, min(Covariance.BLOCKS, d // 64))
        return [round(i * d / k) for i in range(k + 1)]

    CLOSE_ROWS = 1 << 16
    """Rows summed in one float32 product accumulator before it is folded into the float64
    totals (a shard usually closes once, at its end): bounds float32 rounding on long shards."""

    def _close(self) -> None:
        """(n, s, G) of the open accumulation -> (n, mean, M2) in float64, merged on the device.

        In inference mode: the accumulators were made during the capture (inference tensors),
        and the last close comes from `_fold`, outside it.
        """
        acc, self._acc, self._acc_rows = self._acc, None, 0
        if acc is None:
            return
        with torch.inference_mode():
            self._close_into_totals(acc)

    def _close_into_totals(self, acc: dict[str, torch.Tensor]) -> None:
        n_b = acc["n"]
        # always a copy (float64 products too): the totals may take it, `_g` is reused
        m2_b = self._g.to(torch.float64, copy=True)  # type: ignore[union-attr]
        e = self._edges(m2_b.shape[0])
        for i in range(len(e) - 1):  # mirror the upper block triangle
            for j in range(i + 1, len(e) - 1):
                m2_b[e[j]:e[j + 1], e[i]:e[i + 1]] = m2_b[e[i]:e[i + 1], e[j]:e[j + 1]].T
        if not self._stratified and self.every != 1:
            m2_b *= float(self.every)
        n_safe = n_b.clamp_min(1e-300)  # every row dropped (weight 0): adds nothing, no NaN
        delta = acc["s"] / n_safe
        m2_b.addr_(acc["s"], delta, alpha=-1.0)
        mean_b = acc["center"].double() + delta
        d = self._dev
        if d is None:
            self._dev = {"n": n_b, "mean": mean_b, "m2": m2_b}
            return
        d["n"], d["mean"], d["m2"] = chan_merge(d["n"], d["mean"], d["m2"], n_b, mean_b, m2_b,
                                                outer=True, in_place=True)

    def reset(self) -> None:
        """Empty again; the row pool is kept (it holds nothing between batches), and its size.

        A fresh instance would size its pool from `POOL_BYTES` (the CPU's): a GPU's pool, larger,
        would then be filled only that far, every shard after the first making more products.
        """
        buf, wbuf, g, frac, rows = self._buf, self._wbuf, self._g, self._heavy_frac, self.capacity
        bufs = self._bufs
        super().reset()
        self._buf, self._wbuf, self._g, self._heavy_frac = buf, wbuf, g, frac
        self._bufs = bufs
        self.capacity = rows

    def _fold(self) -> None:
        self.end_batch()
        self._close()
        if self._dev is not None:
            self._merge_arrays({k: _np(v) for k, v in self._dev.items()}, consume=True)
            self._dev = None

    def merge_on_device(self, part: Reducer) -> bool:
        """Merge a shard's closed (n, mean, M2) into float64 totals on its device (a GPU run).

        The host path brings three d x d float64 arrays per shard to the host (134 MB each at
        LLaMA-7B's width) and merges them in numpy with fresh temporaries. Here the same merge
        formula runs on the device, from zero totals, with the same operations in the same order
        as numpy's (not the in-place variant): bitwise the host path's result. Only while neither
        holds anything on the host (a shard already folded there merges by the host path, or
        its statistics would be left behind).
        """
        if not (isinstance(part, Covariance) and self._host_empty() and part._host_empty()):
            return False
        part.end_batch()
        part._close()
        b = part._dev
        if b is None:
            return True
        with torch.inference_mode():
            if self._dev is None:
                self._dev = {"n": torch.zeros((), dtype=torch.float64, device=b["n"].device),
                             "mean": torch.zeros_like(b["mean"]),
                             "m2": torch.zeros_like(b["m2"])}
            d = self._dev
            d["n"], d["mean"], d["m2"] = chan_merge(d["n"], d["mean"], d["m2"],
                                                    b["n"], b["mean"], b["m2"], outer=True)
        return True

    def _host_empty(self) -> bool:
        return not self._state["n"].any()

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        """The pairwise merge, with no new d x d array once the totals are this reducer's own.

        Empty totals take `b`'s arrays when they may (`consume`), turned in place into what the
        merge from zeros gives. Otherwise the first merge makes the totals' arrays and every
        later one writes into them (`chan_merge_into`). The allocating merge's temporaries are
        134 MB each at LLaMA-7B's width: four of them per covariance per shard, twice (a shard
        folding its device totals, the run's totals taking the shard's).
        """
        a = self._state
        if self._owns_totals:
            chan_merge_into(a, b)
        elif consume and self._host_empty() and b["mean"].flags.writeable \
                and b["m2"].flags.writeable:
            self._state = chan_merge_taking(b)
        else:
            a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                    b["n"], b["mean"], b["m2"], outer=True)
        self._owns_totals = True

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        super().load(arrays)
        self._owns_totals = False

    def covariance(self) -> np.ndarray:
        st = self.arrays()
        return st["m2"] / max(float(st["n"]) - 1.0, 1.0)


def products_dtype(choice: str, device: str | torch.device) -> str:
    """The covariance products' dtype for `capture.cov_matmul` on `device` (`auto` resolved).

    `auto` is bfloat16 only where the hardware multiplies bfloat16 natively: elsewhere (CPUs
    without AVX512-BF16 or AMX, e.g. AVX2-only runners) torch emulates it, slower than float32.
    Decided once per run, by the driver, from the capture device: the reducers' configs carry
    the result, so every shard of a run, local or on Ray, multiplies alike. A Ray driver that
    cannot see the workers' GPU (they are on other nodes) resolves `auto` to float32 for them:
    it cannot tell whether their GPU has bfloat16 (`cov_matmul = "bfloat16"` asks for it).
    """
    if choice != "auto":
        return choice
    kind = torch.device(device).type
    if kind == "cuda":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    if kind == "cpu":
        cpu = torch.cpu
        native = any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported",
                                                                "_is_amx_tile_supported"))
        return "bfloat16" if native else "float32"
    return "float32"


def _median_norms(b: Batch, norms: torch.Tensor, min_position: int) -> torch.Tensor:
    """(S,) median token norm per site of (S, B, T) `norms`, from `min_position` on, padding out.

    The lower median, as `torch.median` gives it, so one site alone or many at once agree.
    """
    v = norms[:, :, min_position:].reshape(len(norms), -1)
    if b.full:
        return v.median(1).values
    mask = b.mask[:, min_position:].reshape(1, -1)
    return torch.where(mask, v, torch.nan).nanmedian(1).values
