"""Qwen2 / Qwen2.5: the LLaMA block (biases on q, k, v change nothing on the residual)."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="qwen2",
    model_types=("qwen2",),
    examples=("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2-1.5B"),
)
