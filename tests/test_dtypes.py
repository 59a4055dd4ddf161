"""Half-precision weights (bfloat16, float16) on CPU, for both block families: the run builds, the
provenance and the cache key record the dtype, and the numbers stay close to float32's."""

import json
import math

import pytest
from helpers import only_experiments, write_suite

from generator import pipeline as runner
from generator.suite import load_suite

CHEAP = ("norms", "positions")


@pytest.fixture(scope="module")
def suite(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("dtypes")
    path = only_experiments(write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])},
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"])}]), CHEAP)
    s = runner.run(load_suite(path), root / "float32", progress=False)
    assert not s.skipped
    return root, path


def _read(out, model, exp, name):
    return json.loads((out / model / exp / name).read_text())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_builds_every_family_and_is_recorded(suite, dtype):
    root, path = suite
    out = root / dtype
    s = runner.run(load_suite(path), out, progress=False, execution=runner.Execution(dtype=dtype))
    assert not s.skipped, s.skipped
    for model in ("tiny-gpt2", "tiny-llama"):
        prov = _read(out, model, "norms", "provenance.json")
        assert prov["model"]["dtype"] == dtype
        assert prov["cache_key"] != _read(root / "float32", model, "norms", "provenance.json")["cache_key"]
        for exp in CHEAP:
            got = _read(out, model, exp, "result.json")["metrics"]
            want = _read(root / "float32", model, exp, "result.json")["metrics"]
            for k, v in want.items():
                if isinstance(v, float) and math.isfinite(v) and abs(v) > 1e-3:
                    assert got[k] == pytest.approx(v, rel=0.1, abs=0.02), (model, exp, k)
