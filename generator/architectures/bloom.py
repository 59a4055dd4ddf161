"""BLOOM: the residual add happens inside the attention and MLP modules; ALiBi positions.

`h = x + self_attention.dense(attn(input_layernorm(x)))`, then
`out = h + mlp.dense_4h_to_h(gelu(mlp.dense_h_to_4h(post_attention_layernorm(h))))`.

`self_attention` returns h and `mlp` returns out, so the contributions are the outputs of their
last linear layers (exact up to float rounding in eval).
"""

from generator.architectures import Architecture, Refusal

FAMILY = Architecture(
    name="bloom",
    model_types=("bloom",),
    blocks="h",
    attn="self_attention.dense",
    mlp="mlp.dense_4h_to_h",
    norm_final="ln_f",
    position_scheme="alibi",
    embed_scale="no scale; `word_embeddings_layernorm` normalizes the embedding",
    refusals=(
        Refusal("`apply_residual_connection_post_layernorm = True`",
                lambda c: bool(getattr(c, "apply_residual_connection_post_layernorm", False)),
                "the residual is the LayerNorm output, not the block input (h = "
                "input_layernorm(x) + a), so input + attention + MLP does not rebuild the stream",
                "use a BLOOM checkpoint without this flag (every bigscience/bloom* size)"),
        Refusal("`pretraining_tp > 1` with `slow_but_exact = True`",
                lambda c: getattr(c, "pretraining_tp", 1) > 1 and bool(getattr(c, "slow_but_exact", False)),
                "the output projections run as sliced `F.linear` calls, so no module outputs the "
                "attention or MLP contribution",
                "set `slow_but_exact = false` in the model's config.json (the default; the "
                "weights are the same)"),
    ),
    examples=("bigscience/bloom-560m", "bigscience/bloomz-1b1"),
)
