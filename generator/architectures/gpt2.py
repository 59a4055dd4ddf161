"""GPT-2: `h = x + attn(ln_1(x)); out = h + mlp(ln_2(h))`, learned position table `wpe`.

The residual dropouts sit inside `attn` and `mlp`, so their outputs are exact contributions.
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
    position_scheme="learned",
    examples=("openai-community/gpt2", "openai-community/gpt2-medium"),
)
