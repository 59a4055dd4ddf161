"""GPT-2: pre-norm blocks `h[i]` with `ln_1, attn, ln_2, mlp`, final `ln_f`, learned `wpe`."""

from generator.adapters import Adapter, register

GPT2 = Adapter(
    family="gpt2",
    blocks="h",
    norm_attn="ln_1",
    attn="attn",
    norm_mlp="ln_2",
    mlp="mlp",
    norm_final="ln_f",
    pos_embed="wpe",
)

register(GPT2, "gpt2")
