"""Qwen2-MoE: the LLaMA block with a MoE `mlp` (routed experts plus a gated shared expert).

The MLP contribution is the whole `mlp` output: `experts(n) + sigmoid(shared_expert_gate(n)) *
shared_expert(n)`; the `shared_expert` output alone is pre-gate. Layers outside
`decoder_sparse_step` or in `mlp_only_layers` have a dense `mlp` at the same path.
"""

from generator.architectures import Architecture

FAMILY = Architecture(
    name="qwen2_moe",
    model_types=("qwen2_moe",),
    examples=("Qwen/Qwen1.5-MoE-A2.7B",),
    note="MoE: `mlp` is the whole block, shared expert (gated) included",
)
