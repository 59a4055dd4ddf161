"""A declaration resolved against a loaded model: which module outputs (and inputs) are which point.

The only place that turns `generator/architectures/` data into module objects. Per block it
yields *taps*: a module, the points its output gives, whether that output must be cloned, and
`mlp_in`, the input of the MLP branch (its norm, or the MLP when there is no norm). In a
sequential block `mlp_in` is the mid-block residual (`resid_attn`); in a parallel block it must
be the block input, which the residual check verifies. Nothing here knows a family by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from generator.architectures import Architecture
from generator.capture.sites import BLOCK_POINTS
from generator.errors import CaptureError


@dataclass
class Tap:
    """What one module of a block gives: points from its output, and one from its input."""

    module: Any
    outputs: list[str] = field(default_factory=list)
    input: str | None = None
    clone: bool = False


@dataclass
class Wiring:
    """One model's capture plan: per block, its taps; plus the config-level facts."""

    family: str
    parallel: bool
    scale: float
    flattened: tuple[str, ...]
    absent: dict[str, str]
    blocks: list[Any]
    taps: list[list[Tap]]
    norm_final: Any

    @property
    def points(self) -> tuple[str, ...]:
        """Block points emitted, in forward order (absent ones left out)."""
        return tuple(p for p in BLOCK_POINTS if p not in self.absent)


def _need(arch: Architecture, root: Any, path: Any, what: str, where: str) -> Any:
    found = arch.find(root, path)
    if found is None:
        raise CaptureError(f"{arch.name} {where}", f"declared {what} {path!r} is not a module there",
                           f"the `{arch.name}` declaration in generator/architectures/ does not "
                           "match this model: fix its module paths")
    return found


def _block_taps(arch: Architecture, block: Any, where: str) -> list[Tap]:
    """One block's taps, one per module (a norm shared by both branches is hooked once)."""
    by_module: dict[int, Tap] = {}

    def tap(module: Any, point: str | None = None, input_point: str | None = None) -> None:
        t = by_module.setdefault(id(module), Tap(module))
        if point is not None:
            t.outputs.append(point)
            t.clone |= point in arch.clone
        if input_point is not None:
            t.input = input_point

    norm_attn = _need(arch, block, arch.norm_attn, "norm_attn", where) if arch.norm_attn else None
    norm_mlp = _need(arch, block, arch.norm_mlp, "norm_mlp", where) if arch.norm_mlp else None
    mlp = _need(arch, block, arch.mlp, "mlp", where)
    if norm_attn is not None:
        tap(norm_attn, "norm_attn")
    tap(_need(arch, block, arch.attn_post_norm or arch.attn, "attention contribution", where), "attn")
    if norm_mlp is not None:
        tap(norm_mlp, "norm_mlp")
    tap(_need(arch, block, arch.mlp_post_norm, "mlp_post_norm", where)
        if arch.mlp_post_norm else mlp, "mlp")
    tap(norm_mlp if norm_mlp is not None else mlp, input_point="mlp_in")
    return list(by_module.values())


def resolve(arch: Architecture, model: Any) -> Wiring:
    """Every tap of every block, or a `CaptureError` naming the family, block and missing module."""
    config = model.config
    blocks = list(model.get_submodule(arch.blocks))
    taps = [_block_taps(arch, block, f"block {i}") for i, block in enumerate(blocks)]
    final = _need(arch, model, arch.norm_final, "norm_final", "model")
    return Wiring(arch.name, arch.is_parallel(config), arch.scale(config), arch.flattened,
                  arch.absent(config), blocks, taps, final)
