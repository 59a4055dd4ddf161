"""Sharded capture: shard states merge exactly, from files or from Ray actors (local cluster)."""

import json
import os

import numpy as np
import pytest
from helpers import padded_ids, tiny_llama, write_suite

from generator import architectures as adapters
from generator.capture.sites import all_sites
from generator.executors import FAULT_DIR, Local, capture_shard
from generator.inputs import TokenInputs
from generator.pipeline import Execution, run
from generator.reducers.covariance import Covariance
from generator.reducers.means import MeanState
from generator.reducers.norms import NormStats
from generator.reducers.reservoir import Reservoir
from generator.reducers.sample_norms import SampleNorms
from generator.reducers.states import dump_states, load_states, merge_states, save_states
from generator.suite import load_suite


def _reducers():
    sites = [s for s in all_sites(2) if s.point in ("attn", "mlp", "resid_mlp")]
    return [NormStats(sites, 12), MeanState(sites, 32, keep=("site", "position"), seq_len=12),
            MeanState(sites, 32, keep=("sample",), max_samples=8), Covariance(sites, 32),
            Covariance(sites, 32, unit=True, every=2, min_position=1),
            Reservoir(sites, 32, k=40, seed=5), SampleNorms(sites, 10, 12)]


@pytest.fixture(scope="module")
def model_and_inputs():
    model = tiny_llama(n_layer=2, hidden=32)
    ids, mask = padded_ids(10, 12, seed=4, pads={7: 5})
    return model, TokenInputs("text", ids, mask, batch_size=2)


def _arrays(reducers):
    return [r.arrays() for r in reducers]


def test_shards_saved_to_files_and_merged_later_equal_the_in_process_run(model_and_inputs, tmp_path):
    model, inputs = model_and_inputs
    adapter = adapters.for_config(model.config)
    whole = _reducers()
    Local(model, adapter, "cpu", shard_batches=2, progress=False).capture(inputs, whole, "t")
    plan = inputs.shards(2)
    assert plan == [(0, 4), (4, 8), (8, 10)]
    for k, (a, b) in enumerate(plan):  # as three machines would, each writing a file
        part = _reducers()
        capture_shard(model, adapter, inputs, part, "cpu", a, b)
        save_states(tmp_path / f"shard-{k}.npz", part)
    merged = _reducers()
    for k in range(len(plan)):
        merge_states(merged, load_states((tmp_path / f"shard-{k}.npz").read_bytes()))
    for got, want in zip(_arrays(merged), _arrays(whole), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # bit for bit
    with np.load(tmp_path / "shard-0.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_local_executor_reuses_shard_buffers_and_a_failed_shard_leaves_nothing(
        model_and_inputs, monkeypatch):
    model, inputs = model_and_inputs
    ex = Local(model, adapters.for_config(model.config), "cpu", shard_batches=2, progress=False)
    first = _reducers()
    ex.capture(inputs, first, "t")
    (parts,) = ex._parts.values()
    buffer = parts[1]._dev["sum"]  # the position means' float32 shard sums
    calls = {"n": 0}
    update = MeanState.update

    def flaky(self, state):  # fails in the middle of the second shard
        calls["n"] += 1
        if calls["n"] == 30:
            raise RuntimeError("boom")
        update(self, state)

    monkeypatch.setattr(MeanState, "update", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        ex.capture(inputs, _reducers(), "t")
    monkeypatch.undo()
    again = _reducers()
    ex.capture(inputs, again, "t")
    assert parts[1]._dev["sum"] is buffer  # allocated once, zeroed between shards
    for got, want in zip(_arrays(again), _arrays(first), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_shard_states_made_for_other_reducers_are_refused():
    a, b = _reducers(), _reducers()
    b[3] = Covariance(b[3].sites, 32, unit=True)
    with pytest.raises(ValueError, match="different reducers"):
        merge_states(a, load_states(dump_states(b)))


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    pytest.importorskip("ray")
    import ray

    faults = tmp_path_factory.mktemp("faults")
    os.environ[FAULT_DIR] = str(faults)  # before the local cluster starts: workers inherit it
    yield faults
    os.environ.pop(FAULT_DIR, None)
    ray.shutdown()


@pytest.fixture(scope="module")
def sharded_suite(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    suite = write_suite(root / "suite.toml", [{"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])}])
    suite.write_text(suite.read_text().replace("[capture]", "[capture]\nshard_batches = 1"))
    local = run(load_suite(suite), root / "local", progress=False)
    assert not local.skipped
    return root, suite


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "summary.json", "history.json")}


@pytest.mark.slow
def test_ray_sharded_run_is_byte_identical_and_retries_a_failed_shard(ray_env, sharded_suite):
    root, suite = sharded_suite
    (ray_env / "text-1").write_text("")  # shard 1 of the text pass fails once
    s = run(load_suite(suite), root / "ray", progress=False, execution=Execution("ray", 2))
    assert not s.skipped, s.skipped
    assert s.retried and "text shard 1: try 1 failed" in s.retried[0]
    assert any("retried" in line for line in s.lines())
    assert _files(root / "ray") == _files(root / "local")
    assert not (ray_env / "text-1").exists()


@pytest.mark.slow
def test_a_shard_failing_every_try_fails_its_model_and_writes_nothing(ray_env, sharded_suite):
    root, suite = sharded_suite
    (ray_env / "singular-1.always").write_text("")
    try:
        s = run(load_suite(suite), root / "bad", progress=False, execution=Execution("ray", 2))
    finally:
        (ray_env / "singular-1.always").unlink()
    assert "singular shard 1" in s.skipped["tiny-gpt2"] and "3 tries" in s.skipped["tiny-gpt2"]
    assert len([r for r in s.retried if "singular shard 1" in r]) == 3
    manifest = json.loads((root / "bad/manifest.json").read_text()) if (root / "bad/manifest.json").exists() else {}
    assert not [e for e in manifest if e.endswith("/vocab")]  # nothing built from partial data
