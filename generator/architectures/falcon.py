"""Falcon: parallel when `new_decoder_architecture or parallel_attn`, else sequential.

Parallel: `out = x + self_attention(ln_attn|input_layernorm(x)) + mlp(ln_mlp|input_layernorm(x))`
(Falcon-40B/180B have two norms, Falcon-7B one shared). Sequential (Falcon-RW, with ALiBi):
`h = x + self_attention(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))`. The
block adds the attention output into the MLP's output tensor in place, so that tensor is cloned.
"""

from generator.architectures import Architecture, Refusal

FAMILY = Architecture(
    name="falcon",
    model_types=("falcon",),
    blocks="h",
    norm_attn=("ln_attn", "input_layernorm"),
    attn="self_attention",
    norm_mlp=("ln_mlp", "post_attention_layernorm", "input_layernorm"),
    norm_final="ln_f",
    parallel=("new_decoder_architecture", "parallel_attn"),
    scheme_flags=(("alibi", "alibi"),),
    clone=("mlp",),
    refusals=(
        Refusal("`new_decoder_architecture = True` and `parallel_attn = False`",
                lambda c: bool(getattr(c, "new_decoder_architecture", False))
                and not getattr(c, "parallel_attn", True),
                "transformers cannot run this layout (its block asks for `ln_attn`, which it "
                "never builds)",
                "set `parallel_attn = true` (every released new-architecture Falcon has it)"),
    ),
    examples=("tiiuae/falcon-7b", "tiiuae/falcon-40b", "tiiuae/falcon-rw-1b"),
)
