"""GPT-J: parallel block with one shared norm, `n = ln_1(x); out = x + attn(n) + mlp(n)`."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gptj",
    model_types=("gptj",),
    blocks="h",
    norm_attn="ln_1",
    attn="attn",
    norm_mlp="ln_1",
    mlp="mlp",
    norm_final="ln_f",
    parallel=True,
    position_scheme="partial rotary",
    examples=("EleutherAI/gpt-j-6b",),
)
