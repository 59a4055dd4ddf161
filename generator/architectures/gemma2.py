"""Gemma 2: sandwich norms, the contributions are the post-norms' outputs.

`h = x + post_attention_layernorm(self_attn(input_layernorm(x)))`, then
`out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`.

What each branch adds is its post-norm's output; `post_attention_layernorm` is not the norm
before the MLP here (it is in LLaMA: wiring Gemma 2 as LLaMA fails the residual check).
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gemma2",
    model_types=("gemma2",),
    attn_post_norm="post_attention_layernorm",
    norm_mlp="pre_feedforward_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    embed_scale="× sqrt(hidden_size), inside `embed_tokens`",
    examples=("google/gemma-2-2b", "google/gemma-2-9b-it"),
)
