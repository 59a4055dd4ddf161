"""Tiny random configs of every declared family and config variant (hidden 32, 2 blocks, 4 heads).

Each builds the *base* model (`AutoModel.from_config`, what `generator.models.load` gets), with
every 1-D parameter (norm weights, biases) perturbed so that a wrong norm would show. Vocab 261
fits the byte-level tokenizer `helpers.save_tiny_folder` writes.
"""

from __future__ import annotations

import torch

COMMON = {"vocab_size": 261, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 128, "bos_token_id": 259,
          "eos_token_id": 260, "pad_token_id": None}
GQA = {"num_key_value_heads": 2}

VARIANTS: dict[str, tuple[str, dict]] = {
    "gpt2": ("GPT2Config", {"vocab_size": 261, "n_embd": 32, "n_layer": 2, "n_head": 4,
                            "n_positions": 128}),
    "gpt_neo": ("GPTNeoConfig", {"vocab_size": 261, "hidden_size": 32, "num_layers": 2,
                                 "num_heads": 4, "attention_types": [[["global", "local"], 1]],
                                 "window_size": 4, "max_position_embeddings": 128}),
    "gptj": ("GPTJConfig", {"vocab_size": 261, "n_embd": 32, "n_layer": 2, "n_head": 4,
                            "rotary_dim": 4, "n_positions": 128}),
    "gpt_neox-parallel": ("GPTNeoXConfig", {**COMMON, "use_parallel_residual": True}),
    "gpt_neox-sequential": ("GPTNeoXConfig", {**COMMON, "use_parallel_residual": False}),
    "opt": ("OPTConfig", {"vocab_size": 261, "hidden_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "ffn_dim": 64, "max_position_embeddings": 128,
                          "word_embed_proj_dim": 32, "do_layer_norm_before": True,
                          "pad_token_id": 1}),
    "bloom": ("BloomConfig", {"vocab_size": 261, "hidden_size": 32, "n_layer": 2, "n_head": 4}),
    "falcon-7b": ("FalconConfig", {**COMMON, "new_decoder_architecture": False,
                                   "parallel_attn": True, "multi_query": True}),
    "falcon-40b": ("FalconConfig", {**COMMON, "new_decoder_architecture": True,
                                    "parallel_attn": True, "num_kv_heads": 2}),
    "falcon-newarch-1ln": ("FalconConfig", {**COMMON, "new_decoder_architecture": True,
                                            "parallel_attn": True, "num_kv_heads": 2,
                                            "num_ln_in_parallel_attn": 1}),
    "falcon-rw": ("FalconConfig", {**COMMON, "new_decoder_architecture": False,
                                   "parallel_attn": False, "alibi": True, "multi_query": False,
                                   "bias": True}),
    "llama": ("LlamaConfig", {**COMMON, **GQA}),
    "mistral": ("MistralConfig", {**COMMON, **GQA, "sliding_window": 4}),
    "qwen2": ("Qwen2Config", {**COMMON, **GQA}),
    "qwen3": ("Qwen3Config", {**COMMON, **GQA, "head_dim": 8}),
    "gemma": ("GemmaConfig", {**COMMON, **GQA, "head_dim": 8}),
    "gemma2": ("Gemma2Config", {**COMMON, **GQA, "head_dim": 8, "sliding_window": 4}),
    "gemma3": ("Gemma3TextConfig", {**COMMON, **GQA, "head_dim": 8, "sliding_window": 4}),
    "phi": ("PhiConfig", {**COMMON}),
    "phi3": ("Phi3Config", {**COMMON, **GQA}),
    "olmo": ("OlmoConfig", {**COMMON, **GQA}),
    "olmo2": ("Olmo2Config", {**COMMON, **GQA}),
    "stablelm-sequential": ("StableLmConfig", {**COMMON, **GQA, "use_parallel_residual": False}),
    "stablelm-parallel": ("StableLmConfig", {**COMMON, **GQA, "use_parallel_residual": True}),
    "cohere": ("CohereConfig", {**COMMON, **GQA}),
    "granite": ("GraniteConfig", {**COMMON, **GQA, "residual_multiplier": 0.5,
                                  "embedding_multiplier": 3.0}),
    "starcoder2": ("Starcoder2Config", {**COMMON, **GQA}),
    "mixtral": ("MixtralConfig", {**COMMON, **GQA, "num_local_experts": 4,
                                  "num_experts_per_tok": 2}),
    "qwen2_moe": ("Qwen2MoeConfig", {**COMMON, **GQA, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 16,
                                     "shared_expert_intermediate_size": 32, "mlp_only_layers": [1]}),
}
"""Every layout the capture supports: name -> (config class, settings)."""

PARALLEL = {"gptj", "gpt_neox-parallel", "falcon-7b", "falcon-40b", "falcon-newarch-1ln", "phi",
            "stablelm-parallel", "cohere"}

REFUSED: dict[str, tuple[str, dict, str]] = {
    "opt-post-ln": ("OPTConfig", {**VARIANTS["opt"][1], "do_layer_norm_before": False},
                    "do_layer_norm_before"),
    "bloom-post-ln-residual": ("BloomConfig", {**VARIANTS["bloom"][1],
                                               "apply_residual_connection_post_layernorm": True},
                               "apply_residual_connection_post_layernorm"),
    "bloom-slow-tp": ("BloomConfig", {**VARIANTS["bloom"][1], "pretraining_tp": 2,
                                      "slow_but_exact": True}, "slow_but_exact"),
    "falcon-newarch-sequential": ("FalconConfig", {**COMMON, "new_decoder_architecture": True,
                                                   "parallel_attn": False},
                                  "parallel_attn"),
}
"""Layouts the declarations refuse: name -> (config class, settings, words the reason names)."""


def config(name: str, table: dict | None = None):
    import transformers

    cls, kwargs = (table or VARIANTS)[name][:2]
    return getattr(transformers, cls)(**kwargs)


def build(name: str, seed: int = 0):
    """The base model of variant `name`, random, in eval mode, with perturbed 1-D parameters."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(config(name))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()
