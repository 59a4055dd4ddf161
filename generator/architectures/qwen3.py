"""Qwen3: the LLaMA block; `q_norm` and `k_norm` sit inside attention."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="qwen3",
    model_types=("qwen3",),
    examples=("Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B"),
)
