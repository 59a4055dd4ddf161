"""OPT (pre-LN): `h = x + self_attn(self_attn_layer_norm(x)); out = h + fc2(act(fc1(final_layer_norm(h))))`.

There is no MLP module: `fc2`'s output is the contribution, and the block flattens tokens before
the MLP, so the MLP side (its norm's input and output, and `fc2`) is shaped (B*T, d). The
learned table `embed_positions` reads row position + 2. The post-LN layout (opt-350m) normalizes
the stream itself after each add, so no sum of branch outputs rebuilds it: refused.
"""

from generator.architectures import Architecture, Refusal

FAMILY = Architecture(
    name="opt",
    model_types=("opt",),
    blocks="decoder.layers",
    norm_attn="self_attn_layer_norm",
    norm_mlp="final_layer_norm",
    mlp="fc2",
    norm_final="decoder.final_layer_norm",
    pos_embed="decoder.embed_positions",
    pos_offset=2,
    position_scheme="learned",
    flattened=("resid_attn", "norm_mlp", "mlp"),
    refusals=(
        Refusal("`do_layer_norm_before = False` (post-LN, e.g. facebook/opt-350m)",
                lambda c: not getattr(c, "do_layer_norm_before", True),
                "each block applies LayerNorm to the residual after the add, so the stream is "
                "not input + attention + MLP and the residual points would not mean what they "
                "mean elsewhere",
                "use a pre-LN OPT (opt-125m, opt-1.3b and larger); opt-350m is the only post-LN size"),
        Refusal("`_remove_final_layer_norm = True`",
                lambda c: bool(getattr(c, "_remove_final_layer_norm", False)),
                "the model has no final norm, so the `norm_final` point does not exist",
                "use a checkpoint with a final layer norm (every facebook/opt-* pre-LN size)"),
    ),
    examples=("facebook/opt-125m", "facebook/opt-1.3b"),
    note="no module output equals the embedding (token + position table is added inline); "
         "`embed` is the block-0 input, as for every family",
)
