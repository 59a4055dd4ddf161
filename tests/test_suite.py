import json

import pytest

from generator.errors import SuiteError
from generator.pipeline import experiment_params
from generator.suite import load_suite


def test_shipped_suite_loads_with_the_embedded_default_and_paper_models():
    s = load_suite("suite.toml")
    names = [m.name for m in s.models]
    assert "smollm2-135m" in names and "gpt2" in names
    assert set(experiment_params(s)) == {"norms", "attn_vs_mlp", "layerwise", "positions",
                                         "pos_embed", "repeat", "vocab"}


@pytest.mark.parametrize("body,where,what", [
    ("seed = 1\ncolour = 2\n", "colour", "unknown key"),
    ("seed = \"x\"\n", "seed", "expected int"),
    ("[inputs]\nn_samples = 1.5\n", "inputs.n_samples", "expected int"),
    ("[inputs]\nn_samples = 0\n", "inputs.n_samples", "at least 1"),
    ("[[models]]\nname = \"a\"\n", "[[models]] a", "exactly one of"),
    ("[[models]]\nname = \"a\"\nid = \"x\"\nrevison = \"main\"\n", "models[0].revison", "unknown key"),
    ("[experiments.norms]\nmiddle_fraction = \"half\"\n", "experiments.norms.middle_fraction", "expected float"),
    ("[experiments.nope]\nx = 1\n", "experiments.nope", "unknown experiment"),
    ("seed = [\n", "", "not valid TOML"),
    ("[inputs.singular]\nmax_tokens = -5\n", "inputs.singular.max_tokens", "at least 0"),
    ("[inputs.singular]\nbatch_size = 0\n", "inputs.singular.batch_size", "at least 1"),
    ("[capture]\npoints_per_site = 0\n", "capture.points_per_site", "at least 1"),
    ("[capture]\nmax_chart_points = -1\n", "capture.max_chart_points", "at least 1"),
    ("[capture]\ndevice = \"gpu\"\n", "capture.device", "unknown value 'gpu'"),
    ("[capture]\ncov_matmul = \"float16\"\n", "capture.cov_matmul", "unknown value 'float16'"),
    ("[inputs]\nseq_len = 1\n", "inputs.seq_len", "at least 2"),
    ("[claims]\nmade_up_min = 1.0\n", "claims.made_up_min", "no experiment declares"),
    ("[[models]]\nname = \"a\"\nid = \"my model\"\n", "id 'my model'", "not a Hugging Face hub id"),
])
def test_bad_suites_name_file_key_and_type(tmp_path, body, where, what):
    p = tmp_path / "s.toml"
    p.write_text(body)
    with pytest.raises(SuiteError) as err:
        experiment_params(load_suite(p))
    text = str(err.value)
    assert str(p) in text and where in text and what in text and "fix:" in text


@pytest.mark.parametrize("name", ["../escaped", "/some/folder", "", ".", "..", "a/b",
                                  "[x](javascript:alert(1))", "<b>", "a b"])
def test_model_names_that_are_not_plain_slugs_are_refused(tmp_path, name):
    p = tmp_path / "s.toml"
    p.write_text(f"[[models]]\nname = {json.dumps(name)}\nid = \"gpt2\"\n")
    with pytest.raises(SuiteError) as err:
        load_suite(p)
    text = str(err.value)
    assert "plain slug" in text and "fix:" in text and repr(name) in text


def test_the_store_refuses_entries_outside_its_root(tmp_path):
    from generator.artifacts import Store
    from generator.errors import AtlasError

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    store = Store(tmp_path / "out")
    for entry in ("../precious", str(precious), "", "a/../../precious"):
        with pytest.raises(AtlasError, match="outside the artifact folder"):
            store.put(entry, "k", {"x.json": "{}"})
    assert (precious / "keep.txt").read_text() == "mine" and not (tmp_path / "out").exists()


def test_a_suite_with_no_model_is_an_error_not_an_empty_success(tmp_path):
    from generator.pipeline import run

    p = tmp_path / "s.toml"
    p.write_text("seed = 1\n")
    with pytest.raises(SuiteError, match="names no model"):
        run(load_suite(p), tmp_path / "out", progress=False)
    assert not (tmp_path / "out/summary.json").exists()
