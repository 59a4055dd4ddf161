"""OLMo 2: post-norms only, no norm before attention or the MLP.

`h = x + post_attention_layernorm(self_attn(x)); out = h + post_feedforward_layernorm(mlp(h))`.

There is no norm before attention or the MLP, so `norm_attn` and `norm_mlp` are not captured;
the mid-block residual is the MLP's input.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="olmo2",
    model_types=("olmo2",),
    norm_attn=None,
    attn_post_norm="post_attention_layernorm",
    norm_mlp=None,
    mlp_post_norm="post_feedforward_layernorm",
    examples=("allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B"),
)
