"""Granite: `h = x + r·self_attn(input_layernorm(x)); out = h + r·mlp(post_attention_layernorm(h))`.

`r = config.residual_multiplier` is applied in the block, so no module outputs the contribution:
the capture multiplies. `embedding_multiplier` scales the embedding in the model's forward
(`embed` is the block-0 input, so it includes it); `attention_multiplier` and
`logits_scaling` never touch the residual.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="granite",
    model_types=("granite",),
    residual_scale="residual_multiplier",
    embed_scale="× `embedding_multiplier` (config), applied in the model's forward",
    examples=("ibm-granite/granite-3.0-2b-base", "ibm-granite/granite-3.1-8b-instruct"),
)
