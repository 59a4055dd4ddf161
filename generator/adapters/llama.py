"""LLaMA family (LLaMA, Mistral, Qwen2/3, SmolLM): rotary positions, so no learned table."""

from generator.adapters import Adapter, register

LLAMA = Adapter(
    family="llama",
    blocks="layers",
    norm_attn="input_layernorm",
    attn="self_attn",
    norm_mlp="post_attention_layernorm",
    mlp="mlp",
    norm_final="norm",
    pos_embed=None,
)

register(LLAMA, "llama", "mistral", "qwen2", "qwen3")
