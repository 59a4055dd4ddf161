"""Phi (phi-1, phi-1.5, phi-2): parallel block with one shared norm.

`n = input_layernorm(x); out = x + self_attn(n) + mlp(n)`; the final norm is `final_layernorm`.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="phi",
    model_types=("phi",),
    norm_mlp="input_layernorm",
    norm_final="final_layernorm",
    parallel=True,
    position_scheme="partial rotary",
    examples=("microsoft/phi-2", "microsoft/phi-1_5"),
)
