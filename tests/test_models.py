import shutil

import pytest
import torch
from helpers import tiny_llama, write_tiny_gguf

from generator.errors import ModelLoadError
from generator.models import ModelSpec, embedded_gguf, fingerprint, load


def test_tiny_gguf_loads_with_identical_hidden_states(tmp_path):
    ref = tiny_llama(n_layer=2)
    path = write_tiny_gguf(tmp_path / "tiny.gguf", ref)
    got = load(ModelSpec(name="tiny", path=str(path)))
    assert got.model.config.model_type == "llama" and got.model.config.num_hidden_layers == 2
    ids = torch.randint(0, 250, (2, 9))
    a = ref(input_ids=ids).last_hidden_state
    b = got.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert got.tokenizer.encode("the cat", add_special_tokens=False)
    assert len(got.provenance["sha256"]) == 64 and got.provenance["tokenizer_sha256"]


def test_saved_folder_loads_by_path(tiny_folders):
    got = load(ModelSpec(name="g", path=str(tiny_folders["gpt2"])))
    assert got.model.config.model_type == "gpt2"
    assert type(got.model).__name__ == "GPT2Model"  # the base model: no LM head


def test_fingerprint_changes_with_the_weights(tmp_path):
    a = write_tiny_gguf(tmp_path / "a.gguf", tiny_llama(seed=1))
    b = write_tiny_gguf(tmp_path / "b.gguf", tiny_llama(seed=2))
    fa = fingerprint(ModelSpec(name="x", path=str(a)))
    assert fa == fingerprint(ModelSpec(name="x", path=str(a)))
    assert fa["sha256"] != fingerprint(ModelSpec(name="x", path=str(b)))["sha256"]


def test_embedded_model_is_found_through_package_metadata():
    p = embedded_gguf("smollm2-135m")
    assert p.is_file() and p.suffix == ".gguf" and p.stat().st_size > 50_000_000


CAUSES = {  # case: (words the cause must contain, words the fix must contain)
    "missing_path": ("does not exist", "check `path`"),
    "missing_folder_config": ("has no config.json", "saved Hugging Face model folder"),
    "truncated_gguf": ("could not be read", "download it again"),
    "garbage_gguf": ("could not be read", "convert it"),
    "offline_hub": ("local Hugging Face cache", "HF_HOME"),
    "unknown_embedded": ("no such embedded model", "smollm2-135m"),
    "bad_dtype": ("unknown dtype 'float12'", "bfloat16"),
    "unsupported_arch": ("'bert' has no capture declaration", "gpt2"),
}


@pytest.mark.parametrize("case", sorted(CAUSES))
def test_load_failures_name_model_cause_and_fix(case, tmp_path, tiny_folders):
    spec = {
        "missing_path": ModelSpec(name="m", path=str(tmp_path / "nope")),
        "missing_folder_config": ModelSpec(name="m", path=str(tmp_path)),
        "offline_hub": ModelSpec(name="m", id="openai-community/gpt2"),
        "unknown_embedded": ModelSpec(name="m", embedded="gpt-17"),
        "bad_dtype": ModelSpec(name="m", path=str(tiny_folders["gpt2"]), dtype="float12"),
    }.get(case)
    if case == "truncated_gguf":
        data = tiny_folders["llama_gguf"].read_bytes()
        (tmp_path / "t.gguf").write_bytes(data[: len(data) // 2])
        spec = ModelSpec(name="m", path=str(tmp_path / "t.gguf"))
    if case == "garbage_gguf":
        (tmp_path / "g.gguf").write_bytes(b"not a gguf at all" * 100)
        spec = ModelSpec(name="m", path=str(tmp_path / "g.gguf"))
    if case == "unsupported_arch":
        from transformers import BertConfig, BertModel

        BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "b")
        shutil.copy(tiny_folders["gpt2"] / "tokenizer.json", tmp_path / "b")
        spec = ModelSpec(name="m", path=str(tmp_path / "b"))
    with pytest.raises(ModelLoadError) as err:
        load(spec)
    cause, fix = str(err.value).split("\n  fix: ")
    assert cause.startswith("m:") or cause.startswith("gpt-17:")
    want_cause, want_fix = CAUSES[case]
    assert want_cause in cause, cause
    assert want_fix in fix, fix


def test_a_model_too_big_for_free_memory_is_refused_before_loading(tiny_folders, monkeypatch):
    import generator.models as models

    monkeypatch.setattr(models, "available_memory", lambda device: (10_000, "RAM"))
    with pytest.raises(ModelLoadError) as err:
        load(ModelSpec(name="big", path=str(tiny_folders["gpt2"])))
    text = str(err.value)
    assert text.startswith("big:") and "GB of RAM" in text and "bfloat16" in text and "fix:" in text
    monkeypatch.undo()
    assert load(ModelSpec(name="ok", path=str(tiny_folders["gpt2"]))).model is not None
