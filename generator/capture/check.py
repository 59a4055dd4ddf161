"""The residual self-check: the rebuilt stream (block input + attention + MLP) must equal the model's.

An architecture declaration that points at the wrong modules is wrong at every token, so the
check samples every `every`-th position of every batch and fails loudly, naming the block.
"""

from __future__ import annotations

import torch

from generator.errors import CaptureError


def check_residual(block: int, got: dict[str, torch.Tensor], out: torch.Tensor, rtol: float,
                   every: int = 8) -> None:
    """Raise unless input + attn == resid_attn and resid_attn + mlp == out, at sampled positions."""
    at = (slice(None), slice(None, None, every))
    inp, attn, mid, mlp, end = (t[at] for t in (got["input"], got["attn"], got["resid_attn"],
                                                got["mlp"], out))
    err = torch.maximum((inp + attn - mid).abs().amax(), (mid + mlp - end).abs().amax())
    scale = end.abs().amax() + 1.0
    if not bool(err <= rtol * scale):
        raise CaptureError(
            f"block {block}",
            f"rebuilt residual (input + attn + mlp) differs from the block's own by "
            f"{float(err):.3g} (scale {float(scale):.3g})",
            "the architecture declaration's module paths do not match this model, or another "
            "hook changes module outputs; check generator/architectures/ for this model_type",
        )
