"""Phi-3: the LLaMA block, `h = x + self_attn(input_layernorm(x)); out = h + mlp(...(h))`.

The residual dropouts (`resid_attn_dropout`, `resid_mlp_dropout`) are identities in eval.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="phi3",
    model_types=("phi3",),
    examples=("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3.5-mini-instruct"),
)
