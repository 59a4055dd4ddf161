"""A batch of token ids and the captured states handed to reducers, with views computed once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from generator.capture.hashing import token_hash
from generator.capture.sites import Site


@dataclass
class Batch:
    """Token ids (B, T), a validity mask (padding is False) and each row's global sample index."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    sample_ids: torch.Tensor

    @cached_property
    def flat_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample id, position) of every valid token, in row-major order."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return self.sample_ids[rows], cols

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

    @cached_property
    def _subsamples(self) -> dict[tuple[int, int], torch.Tensor]:
        return {}

    @cached_property
    def full(self) -> bool:
        """No padding in this batch (packed text, repeats, single tokens): masks can be skipped."""
        return bool(self.mask.all())


@dataclass
class State:
    """One captured tensor (B, T, D) with views computed once and shared by all reducers.

    Reducers work on the dense (B, T, ...) grid with the mask as weights where they can: no
    copy of the valid rows is made unless one asks for `rows`.
    """

    site: Site
    h: torch.Tensor
    batch: Batch

    @cached_property
    def rows(self) -> torch.Tensor:
        """Valid tokens only, (N, D): padding never reaches a statistic."""
        return self.h[self.batch.mask]

    @cached_property
    def norms2d(self) -> torch.Tensor:
        """(B, T) L2 norm of every slot, zero at padding."""
        n = torch.linalg.vector_norm(self.h, dim=-1, dtype=torch.float32)
        return n if self.batch.full else n * self.batch.fmask
