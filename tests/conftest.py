import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported
os.environ.pop("CI", None)  # CI mode (hub models must be in the lock) is set by the tests of it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded model, loaded once for every slow test."""
    from generator.models import ModelSpec, load

    return load(ModelSpec(name="smollm2-135m", embedded="smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """Tiny random GPT-2 (saved folder) and LLaMA (GGUF file) models, loadable by path."""
    from helpers import save_tiny_folder, tiny_gpt2, tiny_llama, write_tiny_gguf

    root = tmp_path_factory.mktemp("models")
    gpt2 = save_tiny_folder(root / "tiny-gpt2", tiny_gpt2())
    gguf = write_tiny_gguf(root / "tiny-llama.gguf", tiny_llama())
    return {"gpt2": gpt2, "llama_gguf": gguf}
