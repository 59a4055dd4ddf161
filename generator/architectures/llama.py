"""LLaMA: `h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))`.

The default declaration: every field is the default. Also SmolLM2 (the embedded model).
"""

from generator.architectures import SOURCE_READ, TINY_RUN, Architecture

FAMILY = Architecture(
    name="llama",
    model_types=("llama",),
    examples=("meta-llama/Llama-3.2-1B", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    verified=(SOURCE_READ, TINY_RUN,
              "real weights: SmolLM2-135M-Instruct (embedded GGUF) on every `make site` and in "
              "tests/test_smollm2.py"),
)
