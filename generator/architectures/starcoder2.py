"""StarCoder2: the LLaMA block with LayerNorms; its residual dropouts are inside `self_attn` and `mlp`."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="starcoder2",
    model_types=("starcoder2",),
    examples=("bigcode/starcoder2-3b", "bigcode/starcoder2-7b"),
)
