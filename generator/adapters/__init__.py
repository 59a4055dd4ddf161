"""Architecture adapters: where each canonical module lives in a Hugging Face model.

Registry keyed by `config.model_type`; one short file per architecture family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generator.errors import ModelLoadError


@dataclass(frozen=True)
class Adapter:
    """Canonical names mapped to module paths; `{i}` stands for the block index."""

    family: str
    blocks: str
    norm_attn: str
    attn: str
    norm_mlp: str
    mlp: str
    norm_final: str
    pos_embed: str | None

    def n_blocks(self, model: torch.nn.Module) -> int:
        return len(model.get_submodule(self.blocks))

    def block(self, model: torch.nn.Module, i: int) -> torch.nn.Module:
        return model.get_submodule(self.blocks)[i]

    def module(self, model: torch.nn.Module, name: str, i: int | None = None) -> torch.nn.Module:
        path = getattr(self, name)
        return self.block(model, i).get_submodule(path) if i is not None else model.get_submodule(path)

    def position_table(self, model: torch.nn.Module) -> torch.Tensor | None:
        """The learned position-embedding table, or None for rotary models (no table exists)."""
        return None if self.pos_embed is None else model.get_submodule(self.pos_embed).weight


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter, *model_types: str) -> None:
    for t in model_types:
        if t in _REGISTRY:
            raise ValueError(f"adapter for model_type {t!r} registered twice")
        _REGISTRY[t] = adapter


def supported() -> list[str]:
    return sorted(_REGISTRY)


def for_config(config: object, model_name: str = "model") -> Adapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ModelLoadError(
            model_name,
            f"architecture {model_type!r} has no capture adapter",
            f"use a model of a supported type ({', '.join(supported())}) or add an adapter "
            "in generator/adapters/",
        )
    return _REGISTRY[model_type]


from generator.adapters import gpt2, llama  # noqa: E402,F401  (registers the built-in adapters)
