"""`plan`: the CI matrix lists exactly the models whose build is not published, on known runners."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import only_experiments, write_suite

from generator import pipeline as runner
from generator import plan
from generator.errors import AtlasError
from generator.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent
SHA = "d" * 40


@pytest.fixture(scope="module")
def setup(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    suite = only_experiments(write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])},
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"]), "runner": "gpu-t4",
         "dtype": "bfloat16", "big": True},
        {"name": "hub", "id": "org/hub"}]), ("norms",))
    suite.write_text(suite.read_text().replace("big = True", "big = true"))  # TOML spelling
    (root / "models.lock.json").write_text(json.dumps(
        {"models": {"hub": {"id": "org/hub", "revision": "main", "sha": SHA}}}))
    config = root / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels:\n    - gpu-t4\n")
    published = root / "published"
    s = runner.run(load_suite(suite), published, ["tiny-gpt2"], progress=False)
    assert not s.skipped
    return root, suite, config, published


def _rows(suite, published, config, **kw):
    return {r["model"]: r for r in plan.plan(load_suite(suite), published, config, **kw)}


def test_only_unpublished_models_are_planned_with_their_runner_dtype_and_revision(setup):
    root, suite, config, published = setup
    rows = _rows(suite, published, config)
    assert set(rows) == {"tiny-llama", "hub"}  # tiny-gpt2 is published at its current key
    assert rows["tiny-llama"] == {"model": "tiny-llama", "runner": "gpu-t4", "dtype": "bfloat16",
                                  "big": True, "revision": "none", "cache": False,
                                  "why": "not published at this key"}
    assert rows["hub"]["runner"] == plan.DEFAULT_RUNNER and rows["hub"]["revision"] == SHA
    assert rows["hub"]["cache"] is True
    assert set(_rows(suite, None, config)) == {"tiny-gpt2", "tiny-llama", "hub"}  # nothing published
    assert set(_rows(suite, published, config, everything=True)) == {"tiny-gpt2", "tiny-llama", "hub"}


def test_a_changed_parameter_plans_the_published_model_again(setup, tmp_path):
    root, suite, config, published = setup
    changed = tmp_path / "suite.toml"
    changed.write_text(suite.read_text() + "\n[experiments.norms]\nmiddle_fraction = 0.4\n")
    (tmp_path / "models.lock.json").write_text((root / "models.lock.json").read_text())
    assert _rows(changed, published, config)["tiny-gpt2"]["why"] == "not published at this key"


def test_a_runner_label_actionlint_does_not_know_is_refused(setup, tmp_path):
    root, suite, config, published = setup
    bad = tmp_path / "suite.toml"
    bad.write_text(suite.read_text().replace('runner = "gpu-t4"', 'runner = "gpu-t5"'))
    with pytest.raises(AtlasError, match="gpu-t5.*not a GitHub-hosted label") as err:
        plan.plan(load_suite(bad), published, config)
    assert "self-hosted-runner.labels" in err.value.fix


def test_cli_writes_the_matrix_to_stdout_and_github_output_and_needs_the_lock_in_ci(setup, tmp_path):
    root, suite, config, published = setup
    out = tmp_path / "gh_output"
    env = {**{k: v for k, v in os.environ.items() if k != "CI"}, "GITHUB_OUTPUT": str(out)}
    cmd = [sys.executable, "-m", "generator", "plan", "--suite", str(suite), "--published",
           str(published), "--actionlint-config", str(config), "--github-output"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    matrix = json.loads(r.stdout)
    planned = [row["model"] for row in matrix["include"]]
    # (tiny-gpt2 too if another session edited the compute code since the fixture's run: the
    # precise "only unpublished" check is the in-process test above)
    assert planned[-2:] == ["tiny-llama", "hub"]
    lines = out.read_text().splitlines()
    assert lines == [f"matrix={r.stdout.strip()}", f"count={len(planned)}"]
    (root / "models.lock.json").rename(root / "lock.bak")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "CI": "true"}, timeout=120)
    finally:
        (root / "lock.bak").rename(root / "models.lock.json")
    assert r.returncode == 2 and "hub (not in the lock)" in r.stderr and "Traceback" not in r.stderr


def test_the_repository_suite_plans_only_labels_the_repository_declares():
    suite = load_suite(ROOT / "suite.toml")
    config = ROOT / ".github/actionlint.yaml"
    rows = plan.plan(suite, None, config, everything=True)
    labels = set(yaml.safe_load(config.read_text())["self-hosted-runner"]["labels"])
    assert {r["model"] for r in rows} == {m.name for m in suite.models}
    for r in rows:
        assert plan.GITHUB_HOSTED.fullmatch(r["runner"]) or r["runner"] in labels, r
    big = next(r for r in rows if r["model"] == "llama-7b")
    assert big["dtype"] == "bfloat16" and big["big"] and big["runner"] in labels
