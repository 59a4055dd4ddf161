"""A batch of token ids and the captured states handed to reducers, with views computed once.

Hot path rule: nothing here waits for the capture device. What depends only on the token ids
(padding, hashed token subsamples, reservoir candidates) is decided on the host, from the CPU
copy of the batch (`host`), with numpy, and sent to the device as index tensors whose lengths the
host already knows; what depends on the states stays on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from generator.capture.hashing import token_hash
from generator.capture.sites import Site

_M62 = np.uint64((1 << 62) - 1)


def token_hash_np(sample: np.ndarray, pos: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    """`hashing.token_hash` on the host (numpy uint64, same bits): no device work, no sync."""
    with np.errstate(over="ignore"):
        x = (np.asarray(sample, np.int64).astype(np.uint64) * np.uint64(1_000_003)
             + np.asarray(pos, np.int64).astype(np.uint64)
             + (np.asarray(salt).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
        x = x * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((x ^ (x >> np.uint64(31))) & _M62).astype(np.int64)


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`: asynchronous, from pinned memory, no host wait."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if device.type == "cpu" else t.pin_memory().to(device, non_blocking=True)


@dataclass
class Batch:
    """Token ids (B, T), a validity mask (padding is False) and each row's global sample index.

    `host`: the same batch on the CPU, when the tensors above live on an accelerator (the
    executor passes it, so host-side decisions never copy from the device).
    """

    input_ids: torch.Tensor
    mask: torch.Tensor
    sample_ids: torch.Tensor
    host: Batch | None = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def on(self, device: torch.device) -> Batch:
        """The same batch on `device` (asynchronous copies), keeping this one as its host copy."""
        if device.type == "cpu":
            return self
        return Batch(*(to_device(t.numpy(), device) for t in (self.input_ids, self.mask,
                                                             self.sample_ids)), host=self)

    @cached_property
    def _cpu(self) -> Batch:
        if self.input_ids.device.type == "cpu":
            return self
        if self.host is not None:
            return self.host
        return Batch(self.input_ids.cpu(), self.mask.cpu(), self.sample_ids.cpu())  # one copy

    @cached_property
    def np_mask(self) -> np.ndarray:
        """(B, T) validity mask on the host."""
        return self._cpu.mask.numpy()

    @cached_property
    def np_sample_ids(self) -> np.ndarray:
        return self._cpu.sample_ids.numpy().astype(np.int64)

    @cached_property
    def np_input_ids(self) -> np.ndarray:
        return self._cpu.input_ids.numpy()

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        """A host array as a tensor on the capture device (asynchronous from pinned memory)."""
        return to_device(a, self.device)

    @cached_property
    def flat_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample id, position) of every valid token, in row-major order."""
        rows, cols = np.nonzero(self.np_mask)
        return self.to_device(self.np_sample_ids[rows]), self.to_device(cols.astype(np.int64))

    @cached_property
    def positions(self) -> torch.Tensor:
        """(B, T) position of every slot."""
        b, t = self.mask.shape
        return torch.arange(t, device=self.mask.device).expand(b, t)

    @cached_property
    def samples(self) -> torch.Tensor:
        """(B, T) global sample id of every slot."""
        return self.sample_ids.unsqueeze(1).expand(self.mask.shape)

    @cached_property
    def fmask(self) -> torch.Tensor:
        """(B, T) mask as float32: multiplying by it zeroes padding in dense reductions."""
        return self.mask.float()

    def subsample(self, every: int, min_position: int) -> torch.Tensor:
        """(B, T) mask of valid tokens from `min_position` on, in 1 of `every` hash buckets.

        The same for every site of the batch, so it is computed once per batch.
        """
        key = (every, min_position)
        if key not in self._subsamples:
            keep = self.mask & (self.positions >= min_position)
            if every > 1:
                keep &= token_hash(self.samples, self.positions, 0) % every == 0
            self._subsamples[key] = keep
        return self._subsamples[key]

    def np_subsample(self, every: int, min_position: int) -> np.ndarray:
        """`subsample` decided on the host: (B, T) bool numpy, identical to the device mask."""
        key = ("np", every, min_position)
        if key not in self._subsamples:
            b, t = self.np_mask.shape
            keep = self.np_mask.copy()
            keep[:, :min_position] = False
            if every > 1:
                keys = token_hash_np(self.np_sample_ids[:, None], np.arange(t)[None, :], 0)
                keep &= keys % every == 0
            self._subsamples[key] = keep
        return self._subsamples[key]

    def sample_index(self, every: int, min_position: int) -> tuple[torch.Tensor, int]:
        """Flat (B*T) indices of `subsample`'s tokens on the device, and their number (host)."""
        key = ("idx", every, min_position)
        if key not in self._subsamples:
            flat = np.flatnonzero(self.np_subsample(every, min_position))
            self._subsamples[key] = (self.to_device(flat.astype(np.int64)), len(flat))
        return self._subsamples[key]

    def outside_sample(self, every: int, min_position: int) -> torch.Tensor:
        """(B, T) device mask of valid tokens from `min_position` on that `subsample` leaves out."""
        key = ("out", every, min_position)
        if key not in self._subsamples:
            out = self.np_subsample(1, min_position) & ~self.np_subsample(every, min_position)
            self._subsamples[key] = self.to_device(out)
        return self._subsamples[key]

    def count(self, every: int, min_position: int) -> int:
        """How many tokens `subsample` keeps (host)."""
        return self.sample_index(every, min_position)[1]

    @cached_property
    def _subsamples(self) -> dict:
        return {}

    @cached_property
    def full(self) -> bool:
        """No padding in this batch (packed text, repeats, single tokens): masks can be skipped."""
        return bool(self.np_mask.all())  # host copy: no device sync


@dataclass
class State:
    """One captured tensor (B, T, D) with views computed once and shared by all reducers.

    Reducers work on the dense (B, T, ...) grid with the mask as weights where they can: no
    copy of the valid rows is made unless one asks for `rows`.
    """

    site: Site
    h: torch.Tensor
    batch: Batch
    norms_out: torch.Tensor | None = field(default=None, repr=False, compare=False)
    """Where `norms2d` goes: a (B, T) float32 row of a buffer the capture allocated before the
    forward (None: a fresh tensor)."""

    @cached_property
    def flat(self) -> torch.Tensor:
        """(B*T, D): every slot, padding included, for row gathers (made once for all reducers)."""
        return self.h.reshape(-1, self.h.shape[-1])

    @cached_property
    def rows(self) -> torch.Tensor:
        """Valid tokens only, (N, D): padding never reaches a statistic."""
        if self.batch.full:
            return self.flat
        idx = self.batch.to_device(np.flatnonzero(self.batch.np_mask).astype(np.int64))
        return self.flat.index_select(0, idx)

    @cached_property
    def norms2d(self) -> torch.Tensor:
        """(B, T) L2 norm of every slot, zero at padding."""
        n = torch.linalg.vector_norm(self.h, dim=-1, dtype=torch.float32, out=self.norms_out)
        return n if self.batch.full else n.mul_(self.batch.fmask)
