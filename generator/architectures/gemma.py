"""Gemma: the LLaMA block; `GemmaRMSNorm` scales by (1 + weight).

The embedding is multiplied by sqrt(hidden_size) inside `embed_tokens` itself.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="gemma",
    model_types=("gemma",),
    embed_scale="× sqrt(hidden_size), inside `embed_tokens`",
    examples=("google/gemma-2b", "google/gemma-7b"),
)
