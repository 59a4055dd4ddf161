"""Mixtral: the LLaMA block with a sparse MoE as `mlp`; the whole MoE output is the MLP contribution.

Experts are fused 3-D parameters in transformers 5, so per-expert outputs are not hookable; the
checkpoint's `block_sparse_moe` is renamed to `mlp` at load.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="mixtral",
    model_types=("mixtral",),
    examples=("mistralai/Mixtral-8x7B-v0.1",),
    note="MoE: `mlp` is the whole sparse block (top-k weighted sum of experts)",
)
