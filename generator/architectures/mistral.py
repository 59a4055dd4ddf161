"""Mistral: the LLaMA block (sliding-window attention changes nothing on the residual)."""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="mistral",
    model_types=("mistral",),
    examples=("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.3"),
)
