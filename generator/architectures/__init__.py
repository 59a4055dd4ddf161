"""Architecture families: where each capture point lives in a Hugging Face model.

One file per family in this package declares `FAMILY = Architecture(...)`; the registry finds
them by itself, keyed by `config.model_type`, and the site's lists of supported types derive
from it. Importing this package loads no torch (the renderer lists the families).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from generator.errors import AtlasError, ModelLoadError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Architecture:
    """Canonical capture points mapped to module paths inside one block (or the model)."""

    name: str
    """The family, as the site names it."""
    model_types: tuple[str, ...]
    """`config.model_type` values this declaration wires."""
    blocks: str
    norm_attn: str
    attn: str
    norm_mlp: str
    mlp: str
    norm_final: str
    pos_embed: str | None
    """The learned position table, or None (rotary: positions rotate queries and keys)."""
    position_scheme: str = "rotary"

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


@cache
def registry() -> dict[str, Architecture]:
    """model_type -> declaration, from every module of this package."""
    found: dict[str, Architecture] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = f"{__name__}.{info.name}"
        family = getattr(importlib.import_module(module), "FAMILY", None)
        if not isinstance(family, Architecture):
            raise AtlasError(f"{module.replace('.', '/')}.py",
                             "defines no `FAMILY = Architecture(...)`",
                             "see generator/architectures/gpt2.py for the form")
        for t in family.model_types:
            if t in found:
                raise AtlasError(f"{module.replace('.', '/')}.py",
                                 f"model_type {t!r} is already wired by {found[t].name}",
                                 "declare each model_type in one family only")
            found[t] = family
    return found


def supported() -> list[str]:
    return sorted(registry())


def families() -> list[Architecture]:
    """Each declaration once, by name."""
    return sorted({id(f): f for f in registry().values()}.values(), key=lambda f: f.name)


def for_config(config: Any, model_name: str = "model") -> Architecture:
    model_type = getattr(config, "model_type", None)
    if model_type not in registry():
        raise ModelLoadError(
            model_name,
            f"architecture {model_type!r} has no capture declaration",
            f"use a model of a supported type ({', '.join(supported())}) or add one file "
            "declaring it in generator/architectures/",
        )
    return registry()[model_type]
