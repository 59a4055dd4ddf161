"""Supported model types, without importing torch (the renderer must stay torch-free)."""

SUPPORTED = ("gpt2", "llama", "mistral", "qwen2", "qwen3")
