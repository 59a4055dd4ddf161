"""latent-atlas: a living report of LLM latent-space geometry (after arXiv 2511.21594)."""

__version__ = "0.1.0"
