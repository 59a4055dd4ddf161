"""OLMo: the LLaMA block with parameter-free LayerNorms."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="olmo",
    model_types=("olmo",),
    examples=("allenai/OLMo-1B-hf", "allenai/OLMo-7B-0724-hf"),
)
