"""GPT-Neo: GPT-2's wiring (`h = x + attn(ln_1(x)); out = h + mlp(ln_2(h))`), blocks return tuples.

`attn` wraps the global or local attention (`attn.attention`); its output `[0]` is the
contribution. Learned position table `wpe`, row = position.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gpt_neo",
    model_types=("gpt_neo",),
    blocks="h",
    norm_attn="ln_1",
    attn="attn",
    norm_mlp="ln_2",
    mlp="mlp",
    norm_final="ln_f",
    pos_embed="wpe",
    position_scheme="learned",
    examples=("EleutherAI/gpt-neo-125m", "EleutherAI/gpt-neo-1.3B"),
)
