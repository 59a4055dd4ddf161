"""Experiments: one module each, with the same small interface.

A module defines `NAME`, `TITLE`, a frozen `Params` dataclass, and three functions:
`skip_reason(ctx, p)` (why it does not apply to this model, or None), `needs(ctx, p)` (the
reducers it wants, per input mode) and `build(ctx, p, stats)` (finalized reducers → `Output`).
Its docstring is the explanation the site shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from generator.reducers import Reducer


@dataclass
class Context:
    """What an experiment may know about the model and run; no hidden globals."""

    model_name: str
    n_blocks: int
    d_model: int
    seed: int
    seq_len: dict[str, int]
    n_samples: dict[str, int]
    tokenizer: Any
    model: Any
    adapter: Any
    capture: Any
    provenance: dict[str, Any] = field(default_factory=dict)
    input_labels: dict[str, list[str]] = field(default_factory=dict)
    suite_digest: str = ""
    """sha256 of the suite file this run was made from (the cache key covers the parts used)."""

    valid_tokens: dict[str, int] = field(default_factory=dict)
    """Non-padding tokens each input mode will run."""

    def population(self, mode: str, n_sites: int) -> int:
        """(site, token) pairs a reducer over `n_sites` sites will see: sizes reservoir intake."""
        return n_sites * self.valid_tokens.get(mode, 0)

    def token_text(self, ids: Any) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]


@dataclass
class Output:
    charts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Needs = dict[str, dict[str, Reducer]]


def registry() -> dict[str, ModuleType]:
    from generator.experiments import (
        attn_vs_mlp,
        layerwise,
        norms,
        pos_embed,
        positions,
        repeat,
        vocab,
    )

    mods = (norms, attn_vs_mlp, layerwise, positions, pos_embed, repeat, vocab)
    return {m.NAME: m for m in mods}
