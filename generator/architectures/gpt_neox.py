"""GPT-NeoX / Pythia: `use_parallel_residual` picks the layout.

Parallel (Pythia, the default): `out = x + attention(input_layernorm(x)) +
mlp(post_attention_layernorm(x))`, two norms of the same x. Sequential: `h = x +
attention(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))`.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    attn="attention",
    norm_final="final_layer_norm",
    parallel=("use_parallel_residual",),
    position_scheme="partial rotary",
    examples=("EleutherAI/pythia-160m", "EleutherAI/pythia-1.4b", "EleutherAI/gpt-neox-20b"),
)
