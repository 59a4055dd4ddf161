"""Cohere (Command R): parallel block with one shared norm.

`n = input_layernorm(x); out = x + self_attn(n) + mlp(n)`; `logit_scale` touches only logits.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="cohere",
    model_types=("cohere",),
    norm_mlp="input_layernorm",
    parallel=True,
    examples=("CohereForAI/c4ai-command-r-v01",),
)
