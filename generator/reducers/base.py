"""The reducer interface and what reducers share: the pairwise moment merge and in-place sums.

Every reducer has `wants(site)`, `update(state)`, `merge(other)` (exact: shards combine to the
same numbers as one pass, up to rounding), `reset()` (empty again, buffers kept, for the next
shard) and `arrays()`/`load()` so a shard's state can be written as `.npz` + JSON and merged on
another machine. Moments use the pairwise update of (n, mean, M2) in float64 (Chan et al.),
never raw sums of x and x x^T.

Hot path: updates run during the forward pass, so they use dense masked reductions on the
(B, T, D) tensor and accumulate on the capture device (torch tensors: on CUDA nothing leaves the
GPU per batch). The numpy `state` is the canonical, serializable float64 form; device sums are
folded into it by `arrays()`, `merge()` and `load()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from generator.capture.batch import State
from generator.capture.sites import Site
from generator.reducers import spill
from generator.reducers.adding import add_into

log = logging.getLogger(__name__)


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


OUTER_ROWS = 64
"""Rows of the outer product `chan_merge_into` makes at a time (393 KB at width 768)."""


def chan_merge_into(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """`chan_merge(..., outer=True)` of numpy totals `a` and `b`, written into `a`'s own arrays.

    Bitwise what `chan_merge` gives (the same operations on the same values, in the same order),
    without its new d x d arrays: it makes three temporaries and a result per merge (4.7 MB each
    at GPT-2's width, 134 MB at LLaMA-7B's), carved from the free heap the forwards leave
    between shards, so a run's long-lived totals moved through the heap shard after shard and
    split the holes the next forward's temporaries would have reused. `a` must own its arrays.
    """
    n_a, n_b = a["n"], b["n"]
    n = n_a + n_b
    w = n_b / np.maximum(n, 1)  # n is a count: 0 or >= 1
    delta = b["mean"] - a["mean"]
    f = n_a * w
    a["mean"] += delta * w
    m2 = a["m2"]
    np.add(m2, b["m2"], out=m2)
    for i in range(0, len(delta), OUTER_ROWS):
        m2[i:i + OUTER_ROWS] += np.multiply.outer(delta[i:i + OUTER_ROWS], delta) * f
    a["n"] = n


def chan_merge_taking(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`chan_merge(..., outer=True)` of zero totals with `b`, made in place in `b`'s arrays.

    Bitwise that merge's result, for empty totals that may take over `b`'s arrays (consumed).

    With n_a = 0 that merge is n = n_b, mean = 0 + mean_b * w (w = n_b / max(n_b, 1): 1, or 0
    for a count of 0) and M2 = (0 + M2_b) + outer(mean_b, mean_b) * 0, which is M2_b + 0 (a zero
    of either sign added to a number leaves it; to a zero, gives +0), for finite states.
    """
    n_b = b["n"]
    mean, m2 = b["mean"], b["m2"]
    mean *= n_b / np.maximum(n_b, 1)
    mean += 0.0
    m2 += 0.0
    return {"n": n_b + 0.0, "mean": mean, "m2": m2}


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
        self._restore()
        return self._state

    def wants(self, site: Site) -> bool:
        return (site.point, site.block) in self.index

    def nbytes(self) -> int:
        """Bytes of the full-size state (its totals), whether or not they are allocated yet."""
        return sum(a.nbytes for a in self._state.values())

    def update(self, state: State) -> None:
        raise NotImplementedError

    def end_batch(self) -> None:
        """After each forward (and before any fold): reduce what `update` only kept references to."""

    def _fold(self) -> None:
        """Merge the device-side partial state into `self._state` and drop it."""
        self.end_batch()
        if self._dev is not None:
            dev, self._dev = self._dev, None
            self._merge_arrays({k: _np(v) for k, v in dev.items()})

    def merge(self, other: Reducer, consume: bool = False) -> None:
        """Add `other`'s statistics; with `consume` its arrays may be taken over (no copy)."""
        self._fold()
        b, lent = other._partials()
        self._merge_arrays(b, consume and not lent)

    def merge_on_device(self, part: Reducer) -> bool:
        """Merge a shard's device state into totals kept on that device; False: use `merge`.

        For a run on a GPU (the executor decides): the host path brings every shard's sums to
        the host and adds them there while the GPU waits. Reducers whose shard state is large
        (`Sums`, `Covariance`) override this; the rest stay on the host path.
        """
        return False

    def _partials(self) -> tuple[dict[str, np.ndarray], bool]:
        """The arrays to merge elsewhere, and whether they are live device buffers.

        Live buffers will be zeroed and reused by `reset`, so a merge must copy them, never
        adopt them.
        """
        return self.arrays(), False

    def reset(self) -> None:
        """Empty again, for the next shard (the executor reuses one set of shard reducers)."""
        self.__dict__.update(type(self)(self.sites, **self.params).__dict__)

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "sites": [[s.depth, s.point, s.block] for s in self.sites],
                **self.params}

    def arrays(self) -> dict[str, np.ndarray]:
        self._fold()
        self._restore()
        return dict(self._state)

    CAN_SPILL: ClassVar[bool] = False
    """Whether this kind can keep its totals on disk between merges (`Sums`, `Reservoir`); the
    others' merges need their whole state in memory, and it is small."""
    _spill_dir: Path | None = None
    _spill_min = 0
    _spill_failed = False

    def spill_to(self, folder: Path | None, min_bytes: int = 0) -> None:
        """From now on keep merged totals of at least `min_bytes` in a file in `folder`.

        Only kinds that `CAN_SPILL`; the rest ignore it. Between merges a run's totals only wait,
        yet in memory they sit under every later shard's forwards; on disk only what a merge
        writes is touched, while it does, and the first read (`arrays`, `state`) brings them
        back into memory. A file that cannot be written (a full disk) keeps the totals in
        memory, with a warning, and no later merge tries again (it would fail the same way): a
        spill saves memory, it never costs a run.
        """
        self._spill_dir, self._spill_min = folder, min_bytes

    def spills(self, min_bytes: int) -> bool:
        """Whether `spill_to(folder, min_bytes)` would keep this reducer's totals on disk."""
        return self.CAN_SPILL and self.nbytes() >= min_bytes

    def _spill_path(self, suffix: str) -> Path | None:
        """The file to keep the totals in now, or None: no spill asked, too small, or it failed."""
        if self._spill_dir is None or self._spill_failed or not self.spills(self._spill_min):
            return None
        return self._spill_dir / f"{self.kind}-{id(self):x}.{suffix}"

    def _spill_refused(self, what: str, exc: OSError) -> None:
        """A spill's write failed: keep `what` in memory from now on, and say so once."""
        log.warning("%s kept in memory: writing them to disk failed (%s)", what, exc)
        self._spill_failed = True

    def spilled_nbytes(self) -> int:
        """Bytes of the totals that go to disk when they spill (all of them, here)."""
        return self.nbytes()

    def _restore(self) -> None:
        """Bring spilled totals back into memory (reading them calls this)."""

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._dev, self._pristine = None, False
        for k in self._state:
            self._state[k] = np.asarray(arrays[k], dtype=self._state[k].dtype)

    def _zeros(self, like: torch.Tensor,
               dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        """Device accumulators shaped like the numpy state (`dtype`, int64 for counts of bins)."""
        return {k: torch.zeros(v.shape, dtype=torch.int64 if v.dtype == np.int64 else dtype,
                               device=like.device) for k, v in self._state.items()}


def unallocated_zeros(shape: tuple[int, ...] | int, dtype: Any = np.float64) -> np.ndarray:
    """Zeros that take no memory: a read-only view, for a sum-type state replaced on first merge.

    The executor rebuilds its shard reducers empty for every shard, and a shard never touches
    their numpy state (its sums live in device buffers). A fresh `np.zeros` of the position
    means (250 MB at GPT-2-small x 1024 positions) costs nothing while glibc maps new pages for
    it, but once the heap holds that much free memory it is carved from there and calloc writes
    every byte: the peak RSS of a 128 x 1024 run rose by 230 MB from its second shard to its
    third that way. Read-only, so a write into a state that should have been replaced fails.
    """
    return np.broadcast_to(np.zeros((), dtype), shape)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.cpu().numpy()


def _add_into(r: Sums, b: dict[str, np.ndarray], adopt: bool, may_spill: bool = True) -> None:
    """Sum-type state += b, in place (states can be hundreds of MB: no new arrays per merge).

    A reducer that holds nothing yet takes `b` as its state, bitwise what adding it to zeros
    gives: its own arrays when `adopt` (device sums it owns), a copy otherwise. Totals kept on
    disk (`Sums.spill_to`) are added there; where that fails (a full disk), here.
    """
    if (may_spill or r._spilled is not None) and r._add_on_disk(b):
        return
    if r._pristine:
        r._state = {k: b[k].astype(v.dtype, copy=False) if adopt else np.array(b[k], v.dtype)
                    for k, v in r._state.items()}
    else:  # numpy: 3x faster than torch's add_ for float64 += float32 (measured, 10M values),
        for k, v in r._state.items():  # on all intra-op threads (`adding.add_into`)
            add_into(v, b[k])
    r._pristine = False


class Sums(Reducer):
    """Reducers whose state is plain sums: folding and merging are additions, done in place.

    Their totals can be kept on disk (`spill_to`): merges add into the file (`spill.add`: the
    same float64 additions as in memory, so the same bits), and a shard's forward passes carry
    only the shard's own sums. Totals merged on the device (a GPU run) stay there.
    """

    CAN_SPILL = True
    _spilled: spill.Spilled | None = None
    """Where the totals are while on disk (`_state` then holds empty placeholders)."""

    def _add_on_disk(self, b: dict[str, np.ndarray]) -> bool:
        """Add `b` into the totals on disk, writing them there first; False: add in memory.

        In memory when no spill was asked, the totals are small, or the disk failed.
        """
        try:
            if self._spilled is None:
                path = None if self._dev is not None else self._spill_path("sums")
                if path is None:
                    return False
                dtypes = {k: v.dtype for k, v in self._state.items()}
                first = self._pristine  # then `b` is the totals: what adding it to zeros gives
                self._spilled = spill.write(path, b if first else self._state, dtypes)
                self._state = {k: unallocated_zeros(v.shape, v.dtype)
                               for k, v in self._state.items()}
                self._pristine = False
                if first:
                    return True
            spill.add(self._spilled, b)
            return True
        except OSError as exc:
            self._spill_refused(f"{self.kind} totals", exc)
            self._restore()
            return False

    def _restore(self) -> None:
        s = self._spilled
        if s is None:
            return
        try:
            self._state = spill.read(s)
        except OSError as exc:
            raise spill.lost(s.path, f"{self.kind} totals", exc) from exc
        self._spilled = None
        s.path.unlink(missing_ok=True)

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._discard_spill()
        super().load(arrays)

    def _fold(self) -> None:
        self.end_batch()
        if self._dev is not None:
            dev, self._dev = self._dev, None
            # read now: into memory, not to disk (device totals of a GPU run, `merge_on_device`)
            _add_into(self, {k: _np(v) for k, v in dev.items()}, adopt=True, may_spill=False)

    def _merge_arrays(self, b: dict[str, np.ndarray], consume: bool = False) -> None:
        _add_into(self, b, adopt=consume)

    def merge_on_device(self, part: Reducer) -> bool:
        """Add a shard's device sums into float64 totals on its device, queued behind its kernels.

        The host path copies each shard's float32 sums to fresh host pages and adds them in numpy
        while the GPU idles: 130 MB per shard for GPT-2-small's position means at 1024 positions
        (on this project's CPU the numpy add alone takes 25 ms and first-touch page faults run at
        about 1.5 GB/s; an H200's four bfloat16 forwards of that shard take about 30 ms by its
        matrix rate, an estimate), 3.5 GB at LLaMA-7B x 2048. Here it is one add per array on
        the device; the totals reach the host once, when read (`_fold`, which adopts them:
        float64 already). The same float64 additions in the same order as the host path:
        bitwise the same totals. Only while neither holds anything on the host (`_pristine`: a
        shard already folded there merges by the host path, or its sums would be left behind).
        """
        if not (self._pristine and isinstance(part, Sums) and part._pristine):
            return False
        part.end_batch()
        if part._dev is None:  # the shard saw no data: nothing to add
            return True
        with torch.inference_mode():  # the shard's buffers are inference tensors
            if self._dev is None:
                self._dev = {k: v.to(torch.float64 if v.is_floating_point() else v.dtype,
                                     copy=True) for k, v in part._dev.items()}
            else:
                for k, v in part._dev.items():
                    self._dev[k].add_(v)
        return True

    def _discard_spill(self) -> None:
        """Forget spilled totals (for `load` and `reset`, which replace the state right after)."""
        if self._spilled is not None:
            self._spilled.path.unlink(missing_ok=True)
            self._spilled = None

    def _partials(self) -> tuple[dict[str, np.ndarray], bool]:
        """A shard's device sums as they are (float32 for MeanState), to add into the total.

        No float64 copy of the shard is made, so a run holds the float64 total plus one shard at
        its own precision, whatever the number of shards.
        """
        self.end_batch()
        if self._pristine and self._dev is not None:
            return {k: _np(v) for k, v in self._dev.items()}, True
        return self.arrays(), False

    def reset(self) -> None:
        """Empty again, keeping the device buffers, zeroed in place.

        Fresh ones for every shard cost a page fault per 4 KB (a third of a second per shard at
        SmolLM2's 4 x 512).
        """
        dev = self._dev if self._pristine else None
        self._discard_spill()
        super().reset()
        if dev is not None:
            with torch.inference_mode():  # they were made inside it, by the capture
                self._clear(dev)
            self._dev = dev

    def _clear(self, dev: dict[str, torch.Tensor]) -> None:
        """Empty the kept device sums for the next shard: zeroed, here (all of them)."""
        for v in dev.values():
            v.zero_()
