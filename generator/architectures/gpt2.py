"""GPT-2: pre-norm blocks `h[i]` with `ln_1, attn, ln_2, mlp`, final `ln_f`, learned `wpe`.

Residual: x + attn(ln_1(x)), then + mlp(ln_2(.)).
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gpt2",
    model_types=("gpt2",),
    blocks="h",
    norm_attn="ln_1",
    attn="attn",
    norm_mlp="ln_2",
    mlp="mlp",
    norm_final="ln_f",
    pos_embed="wpe",
    position_scheme="learned table",
)
