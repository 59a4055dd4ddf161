"""A fixed pseudo-random key per (sample, position): the same under any batching or sharding.

Token subsampling (covariance) and reservoir sampling both draw from it, so which tokens enter
a statistic depends only on the seed and the token's place in the corpus.
"""

from __future__ import annotations

import torch


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
