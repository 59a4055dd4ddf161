"""Streaming, mergeable statistics over captured states: memory is fixed by the suite, not the corpus.

Every reducer has `wants(site)`, `update(state)`, `merge(other)` (exact: shards combine to the
same numbers as one pass, up to float64 rounding) and `arrays()`/`load()` so a shard's state can be
written as `.npz` + JSON and merged on another machine. Moments use the pairwise update of
(n, mean, M2) in float64 (Chan et al.), never raw sums of x and x x^T.
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


def chan_merge(n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray,
               n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray,
               outer: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine two (n, mean, M2) summaries; `outer` for a covariance M2 matrix."""
    n = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n > 0, n_b / np.where(n > 0, n, 1), 0.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * (w[..., None] if np.ndim(mean_a) > np.ndim(n) else w)
    f = n_a * w
    if outer:
        m2 = m2_a + m2_b + np.outer(delta, delta) * f
    else:
        m2 = m2_a + m2_b + delta * delta * f
    return n, mean, m2


class Reducer:
    """Base: a set of sites, numpy state in `self.state`, exact merge by field."""

    kind: ClassVar[str] = "reducer"

    def __init__(self, sites: Iterable[Site]) -> None:
        self.sites = sorted(set(sites))
        self.index = {(s.point, s.block): i for i, s in enumerate(self.sites)}
        self.state: dict[str, np.ndarray] = {}
        self.params: dict[str, Any] = {}
        """Constructor arguments besides `sites`, JSON-able: `from_config` rebuilds an empty twin."""

    def wants(self, site: Site) -> bool:
        return (site.point, site.block) in self.index

    def update(self, state: State) -> None:
        raise NotImplementedError

    def merge(self, other: Reducer) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "sites": [[s.depth, s.point, s.block] for s in self.sites],
                **self.params}

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.state)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        for k in self.state:
            self.state[k] = np.asarray(arrays[k], dtype=self.state[k].dtype)


class NormStats(Reducer):
    """Per site: mean/variance/histogram of token norms overall and per sequence position."""

    kind = "norm_stats"

    def __init__(self, sites: Iterable[Site], seq_len: int) -> None:
        super().__init__(sites)
        s, t = len(self.sites), seq_len
        self.seq_len = seq_len
        self.params = {"seq_len": seq_len}
        self.state = {"n": np.zeros(s), "mean": np.zeros(s), "m2": np.zeros(s),
                      "hist": np.zeros((s, len(HIST_EDGES) - 1), np.int64),
                      "n_pos": np.zeros((s, t)), "mean_pos": np.zeros((s, t)),
                      "m2_pos": np.zeros((s, t))}

    def update(self, state: State) -> None:
        i = self.index[(state.site.point, state.site.block)]
        norms = state.norms.double()
        _, pos = state.batch.flat_index
        st = self.state
        x = norms.cpu().numpy()
        n_b = float(len(x))
        mean_b = x.mean()
        m2_b = float(((x - mean_b) ** 2).sum())
        st["n"][i], st["mean"][i], st["m2"][i] = chan_merge(
            st["n"][i], st["mean"][i], st["m2"][i], n_b, mean_b, m2_b)
        logs = np.log10(np.maximum(x, 1e-30)).clip(HIST_EDGES[0], HIST_EDGES[-1] - 1e-9)
        st["hist"][i] += np.histogram(logs, HIST_EDGES)[0]
        t = self.seq_len
        pos_np = pos.cpu().numpy()
        n_p = np.bincount(pos_np, minlength=t).astype(float)
        s_p = np.bincount(pos_np, weights=x, minlength=t)
        mean_p = np.divide(s_p, n_p, out=np.zeros(t), where=n_p > 0)
        m2_p = np.bincount(pos_np, weights=(x - mean_p[pos_np]) ** 2, minlength=t)
        st["n_pos"][i], st["mean_pos"][i], st["m2_pos"][i] = chan_merge(
            st["n_pos"][i], st["mean_pos"][i], st["m2_pos"][i], n_p, mean_p, m2_p)

    def merge(self, other: Reducer) -> None:
        a, b = self.state, other.state
        a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                b["n"], b["mean"], b["m2"])
        a["n_pos"], a["mean_pos"], a["m2_pos"] = chan_merge(
            a["n_pos"], a["mean_pos"], a["m2_pos"], b["n_pos"], b["mean_pos"], b["m2_pos"])
        a["hist"] = a["hist"] + b["hist"]

    def variance(self) -> np.ndarray:
        n = self.state["n"]
        return np.divide(self.state["m2"], n - 1, out=np.zeros_like(n), where=n > 1)


class MeanState(Reducer):
    """Mean state vector, kept apart by any of site / sample / position and averaged over the rest.

    `keep=("position",)` averages over samples and sites (one vector per position); `("site",
    "sample")` averages over positions. Samples beyond `max_samples` are ignored when `sample` is
    kept, so memory stays fixed; the finalized `count` shows what entered.
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
        self.state = {"sum": np.zeros((n_slots, d_model)), "count": np.zeros(n_slots)}
        self._acc: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, state: State) -> None:
        n_site, n_sample, n_pos = self.dims
        site_i = self.index[(state.site.point, state.site.block)] if n_site > 1 else 0
        sample, pos = state.batch.flat_index
        rows = state.rows
        sample = sample if n_sample > 1 else torch.zeros_like(sample)
        pos = pos if n_pos > 1 else torch.zeros_like(pos)
        keep = sample < n_sample
        slot = (site_i * n_sample + sample[keep]) * n_pos + pos[keep]
        acc = self._accumulators(rows.device)
        acc[0].index_add_(0, slot, rows[keep].double())
        acc[1].index_add_(0, slot, torch.ones_like(slot, dtype=torch.float64))

    def _accumulators(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums stay on the capture device in float64; folded into numpy state on `arrays()`."""
        if self._acc is None:
            self._acc = (torch.zeros(self.state["sum"].shape, dtype=torch.float64, device=device),
                         torch.zeros(self.state["count"].shape, dtype=torch.float64,
                                     device=device))
        return self._acc

    def _flush(self) -> None:
        if self._acc is not None:
            self.state["sum"] = self.state["sum"] + self._acc[0].cpu().numpy()
            self.state["count"] = self.state["count"] + self._acc[1].cpu().numpy()
            self._acc = None

    def arrays(self) -> dict[str, np.ndarray]:
        self._flush()
        return dict(self.state)

    def merge(self, other: Reducer) -> None:
        self._flush()
        b = other.arrays()
        self.state["sum"] = self.state["sum"] + b["sum"]
        self.state["count"] = self.state["count"] + b["count"]

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(means shaped dims + (D,), counts shaped dims); empty slots are NaN."""
        st = self.arrays()
        c = st["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = st["sum"] / c[:, None]
        return m.reshape(*self.dims, -1), c.reshape(self.dims)


class Covariance(Reducer):
    """Mean and centered sum of outer products of the states pooled over `sites`, for exact PCA.

    `unit=True` normalizes each token first. `every=k` keeps the tokens whose (sample, position)
    hash falls in 1/k of the space: a fixed, shard-invariant subsample that costs 1/k of the
    matrix products. Each batch is centered on its own mean before its product (so float32 matmul
    loses nothing to a large offset) and merged in float64.
    """

    kind = "covariance"

    def __init__(self, sites: Iterable[Site], d_model: int, unit: bool = False, every: int = 1,
                 min_position: int = 0, matmul_dtype: torch.dtype | str = torch.float32) -> None:
        super().__init__(sites)
        if isinstance(matmul_dtype, str):
            matmul_dtype = getattr(torch, matmul_dtype)
        self.unit, self.every, self.matmul_dtype = unit, every, matmul_dtype
        self.min_position = min_position
        self.params = {"d_model": d_model, "unit": unit, "every": every,
                       "min_position": min_position,
                       "matmul_dtype": str(matmul_dtype).removeprefix("torch.")}
        self.state = {"n": np.zeros(()), "mean": np.zeros(d_model),
                      "m2": np.zeros((d_model, d_model))}

    def update(self, state: State) -> None:
        x = state.unit_rows if self.unit else state.rows
        if self.every > 1 or self.min_position > 0:
            sample, pos = state.batch.flat_index
            keep = pos >= self.min_position
            if self.every > 1:
                keep &= token_hash(sample, pos, 0) % self.every == 0
            x = x[keep]
        if len(x) == 0:
            return
        x = x.to(self.matmul_dtype)
        mean_b = x.double().mean(0)
        c = x - mean_b.to(x.dtype)
        m2_b = (c.T @ c).double().cpu().numpy()
        st = self.state
        st["n"], st["mean"], st["m2"] = chan_merge(
            st["n"], st["mean"], st["m2"], np.asarray(float(len(x))), mean_b.cpu().numpy(), m2_b,
            outer=True)

    def merge(self, other: Reducer) -> None:
        a, b = self.state, other.state
        a["n"], a["mean"], a["m2"] = chan_merge(a["n"], a["mean"], a["m2"],
                                                b["n"], b["mean"], b["m2"], outer=True)

    def covariance(self) -> np.ndarray:
        return self.state["m2"] / max(float(self.state["n"]) - 1.0, 1.0)


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
    """

    kind = "reservoir"
    LABELS = ("key", "depth", "block", "sample", "position", "token")

    def __init__(self, sites: Iterable[Site], d_model: int, k: int, seed: int) -> None:
        super().__init__(sites)
        self.k, self.seed = k, seed
        self.params = {"d_model": d_model, "k": k, "seed": seed}
        self.state = {"vectors": np.zeros((0, d_model), np.float32),
                      **{name: np.zeros(0, np.int64) for name in self.LABELS}}
        self._threshold = np.iinfo(np.int64).max

    def update(self, state: State) -> None:
        sample, pos = state.batch.flat_index
        keys = token_hash(sample, pos, self.seed * 100_003 + state.site.depth)
        take = keys < self._threshold
        if not bool(take.any()):
            return
        n = int(take.sum())
        new = {"vectors": state.rows[take].float().cpu().numpy(),
               "key": keys[take].cpu().numpy(), "depth": np.full(n, state.site.depth),
               "block": np.full(n, state.site.block), "sample": sample[take].cpu().numpy(),
               "position": pos[take].cpu().numpy(),
               "token": state.batch.flat_tokens[take].cpu().numpy()}
        self._absorb(new, prune_at=4 * self.k)

    def _absorb(self, new: dict[str, np.ndarray], prune_at: int) -> None:
        st = {k: np.concatenate([self.state[k], new[k].astype(self.state[k].dtype)])
              for k in self.state}
        if len(st["key"]) > prune_at:
            order = np.lexsort((st["depth"], st["key"]))[: self.k]
            st = {k: v[order] for k, v in st.items()}
            self._threshold = int(st["key"][-1]) if len(st["key"]) >= self.k else self._threshold
        self.state = st

    def merge(self, other: Reducer) -> None:
        self._absorb(other.state, prune_at=0)
        self._finish()

    def _finish(self) -> None:
        order = np.lexsort((self.state["depth"], self.state["key"]))[: self.k]
        self.state = {k: v[order] for k, v in self.state.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        self._finish()
        return dict(self.state)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = {k: np.asarray(arrays[k], dtype=self.state[k].dtype) for k in self.state}


class SampleNorms(Reducer):
    """Mean token norm over `sites` for every (sample, position): per-token results (vocab, repeat)."""

    kind = "sample_norms"

    def __init__(self, sites: Iterable[Site], n_samples: int, seq_len: int) -> None:
        super().__init__(sites)
        self.params = {"n_samples": n_samples, "seq_len": seq_len}
        self.state = {"sum": np.zeros((n_samples, seq_len)), "count": np.zeros((n_samples, seq_len))}

    def update(self, state: State) -> None:
        sample, pos = state.batch.flat_index
        s, p = sample.cpu().numpy(), pos.cpu().numpy()
        np.add.at(self.state["sum"], (s, p), state.norms.double().cpu().numpy())
        np.add.at(self.state["count"], (s, p), 1.0)

    def merge(self, other: Reducer) -> None:
        for k in self.state:
            self.state[k] = self.state[k] + other.state[k]

    def means(self) -> np.ndarray:
        c = self.state["count"]
        return np.divide(self.state["sum"], c, out=np.full_like(c, np.nan), where=c > 0)


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


def merge_states(into: list[Reducer], shard: list[Reducer]) -> None:
    """Merge a shard's reducers into `into`, refusing states that were made for other reducers."""
    if [r.config() for r in into] != [r.config() for r in shard]:
        raise ValueError("shard states were made for different reducers (suite or model changed)")
    for acc, part in zip(into, shard, strict=True):
        acc.merge(part)
