"""LLaMA family (LLaMA, Mistral, Qwen2/3, SmolLM): rotary positions, so no learned table.

Residual: x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(.)).
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks="layers",
    norm_attn="input_layernorm",
    attn="self_attn",
    norm_mlp="post_attention_layernorm",
    mlp="mlp",
    norm_final="norm",
    pos_embed=None,
)
