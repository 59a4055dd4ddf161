"""StableLM: `use_parallel_residual` picks the layout.

Sequential (default): `h = x + self_attn(input_layernorm(x)); out = h +
mlp(post_attention_layernorm(h))`. Parallel: one shared norm, `n = input_layernorm(x); out = x +
self_attn(n) + mlp(n)` (`post_attention_layernorm` is then None, so the MLP norm falls back).
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="stablelm",
    model_types=("stablelm",),
    norm_mlp=("post_attention_layernorm", "input_layernorm"),
    parallel=("use_parallel_residual",),
    position_scheme="partial rotary",
    examples=("stabilityai/stablelm-2-1_6b", "stabilityai/stablelm-3b-4e1t"),
)
