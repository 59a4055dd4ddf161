"""Sharded capture: shard states merge exactly, from files, from Ray actors on a cluster this
process starts, and on a real cluster (`ray start --head`) reached through RAY_ADDRESS."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import every_reducer_kind, padded_ids, tiny_llama, write_suite

from generator import architectures as adapters
from generator import executors
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

_reducers = every_reducer_kind


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


def test_totals_merged_on_the_device_are_bitwise_the_host_merge(model_and_inputs):
    """A GPU run keeps its large totals on the device and merges each shard there: the same
    numbers, bit for bit, as bringing every shard to the host (forced here on the CPU, where
    a run keeps the host path). The device path is really taken: before the totals are read,
    the sums and covariances are still device tensors and the host state is untouched, while
    the reservoir and norm statistics were merged on the host."""
    model, inputs = model_and_inputs
    adapter = adapters.for_config(model.config)
    host, dev = _reducers(), _reducers()
    Local(model, adapter, "cpu", 2, progress=False, merge_on_device=False).capture(inputs, host, "t")
    Local(model, adapter, "cpu", 2, progress=False, merge_on_device=True).capture(inputs, dev, "t")
    for r in dev:
        kept = isinstance(r, MeanState | SampleNorms | Covariance)
        assert (r._dev is not None) == kept, type(r).__name__
        if kept:
            assert r._pristine and not r._state[next(iter(r._state))].any()
    assert all(r._dev is None for r in host)
    for got, want in zip(_arrays(dev), _arrays(host), strict=True):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)  # bit for bit


def test_a_shard_already_read_on_the_host_is_merged_there_not_lost(model_and_inputs):
    """The device merge takes only fresh device shards: a shard whose statistics were already
    read (folded into its host state) goes by the host path, and nothing is left behind."""
    model, inputs = model_and_inputs
    adapter = adapters.for_config(model.config)
    read, fresh = _reducers(), _reducers()
    for part in (read, fresh):
        capture_shard(model, adapter, inputs, part, "cpu", 0, 4)
    _arrays(read)  # folded: the device sums are gone, the host state holds them
    got, want = _reducers(), _reducers()
    merge_states(got, read, consume=False, on_device=True)
    merge_states(want, fresh, consume=False)
    for g, w in zip(_arrays(got), _arrays(want), strict=True):
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def test_totals_stay_on_the_host_for_a_cpu_run_and_on_a_gpu_only_where_they_fit(monkeypatch):
    from generator.executors import merge_totals_on_device

    reducers = _reducers()
    assert not merge_totals_on_device(torch.device("cpu"), reducers)
    need = sum(r.nbytes() for r in reducers if not isinstance(r, NormStats | Reservoir))
    for free, want in ((need + (1 << 30), True), (need + (1 << 30) - 1, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d, f=free: (f, 80 << 30))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 5 << 20)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 5 << 20)
        assert merge_totals_on_device(torch.device("cuda"), reducers) is want


def test_local_executor_reports_each_shard_after_its_merge(model_and_inputs):
    """The bench reads memory growth here: the hook must see every shard, merged into the totals."""
    model, inputs = model_and_inputs
    totals = _reducers()
    means = totals[1]
    seen = []

    def after(done):
        seen.append((done, float(means.arrays()["count"].sum())))

    Local(model, adapters.for_config(model.config), "cpu", shard_batches=2, progress=False,
          after_shard=after).capture(inputs, totals, "t")
    n_sites = len(means.sites)
    assert seen == [(stop, float(inputs.mask[:stop].sum()) * n_sites)
                    for _, stop in inputs.shards(2)]


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


def _count_disk_adds(monkeypatch):
    from generator.reducers import spill

    calls = {"n": 0}
    real = spill.add

    def counted(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(spill, "add", counted)
    return calls


def test_a_run_keeping_every_total_on_disk_writes_the_same_bytes(sharded_suite, tmp_path,
                                                                 monkeypatch):
    """Every sum-type total (not only those above the size threshold) kept on disk between
    shards, through the whole pipeline: byte-identical artifacts, and no spill folder left."""
    root, suite = sharded_suite
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", 0)
    adds = _count_disk_adds(monkeypatch)
    s = run(load_suite(suite), tmp_path / "spilled", progress=False)
    assert not s.skipped, s.skipped
    assert adds["n"] > 0
    assert _files(tmp_path / "spilled") == _files(root / "local")
    assert not list((tmp_path / "spilled").glob(".spill*"))


@pytest.mark.slow
def test_ray_sharded_run_is_byte_identical_and_retries_a_failed_shard(ray_env, sharded_suite,
                                                                      monkeypatch):
    """Also with the driver's totals on disk between shards (every one, whatever its size)."""
    from generator import models

    root, suite = sharded_suite
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", 0)
    adds = _count_disk_adds(monkeypatch)
    (ray_env / "text-1").write_text("")  # shard 1 of the text pass fails once

    def no_weights_here(*args, **kwargs):
        raise AssertionError("the driver of a Ray run must not load the weights")

    monkeypatch.setattr(models, "load", no_weights_here)  # this process only: actors load their own
    s = run(load_suite(suite), root / "ray", progress=False, execution=Execution("ray", 2))
    assert not s.skipped, s.skipped
    assert s.retried and "text shard 1: try 1 failed" in s.retried[0]
    assert any("retried" in line for line in s.lines())
    assert _files(root / "ray") == _files(root / "local")
    assert adds["n"] > 0
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
    assert s.failed == ["tiny-gpt2"] and s.exit_code() != 0
    assert len([r for r in s.retried if "singular shard 1" in r]) == 3
    manifest = json.loads((root / "bad/manifest.json").read_text()) if (root / "bad/manifest.json").exists() else {}
    assert not [e for e in manifest if e.endswith("/vocab")]  # nothing built from partial data


def test_a_failed_capture_fails_the_run_while_a_missing_model_does_not():
    from generator.pipeline import Summary

    s = Summary(generated=["a/norms"], skipped={"b": "not available"}, models=["a", "b"])
    assert s.exit_code() == 0 and s.exit_code(strict=True) == 1
    s.failed.append("b")
    assert s.exit_code() == 1 and s.outcome().startswith("failed: the capture of b failed")


def test_the_runtime_env_ships_the_code_and_hub_settings_but_leaves_the_jobs_own(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_HOME", "/shared/hf")
    monkeypatch.setenv("UNRELATED", "x")
    env = executors.runtime_env({})
    assert env["py_modules"] == [str(Path(executors.__file__).parent)]
    assert env["env_vars"]["HF_TOKEN"] == "hf_secret" and env["env_vars"]["HF_HOME"] == "/shared/hf"
    assert "UNRELATED" not in env["env_vars"]
    job = {"working_dir": ".", "py_modules": ["x"], "env_vars": {"HF_HOME": "/job/hf"}}
    env = executors.runtime_env(job)  # `ray job submit --runtime-env-json ...` wins (Ray refuses both)
    assert "py_modules" not in env and "excludes" not in env
    assert "HF_HOME" not in env["env_vars"] and env["env_vars"]["HF_TOKEN"] == "hf_secret"


def test_workers_get_a_gpu_exactly_when_they_reserve_one():
    from generator.errors import AtlasError

    assert executors.worker_device("auto", 0) == "cpu" and executors.worker_device("auto", 1) == "cuda"
    with pytest.raises(AtlasError, match="--gpus-per-worker 1"):
        executors.worker_device("cuda", 0)
    with pytest.raises(AtlasError, match="contradicts"):
        executors.worker_device("cpu", 0.5)


def test_an_address_where_nothing_listens_fails_in_seconds(sharded_suite, tmp_path):
    root, suite = sharded_suite
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out",
                        str(tmp_path / "o"), "--executor", "ray", "--no-progress"],
                       capture_output=True, text=True, timeout=300,
                       env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert r.returncode != 0 and time.time() - t0 < 120
    assert f"RAY_ADDRESS 127.0.0.1:{port}: no Ray cluster answers there" in r.stdout
    assert "failed     tiny-gpt2" in r.stdout


@pytest.fixture(scope="module")
def ray_cluster():
    """A real cluster: `ray start --head --block` in its own session, stopped (group) at teardown.

    Its environment has no ATLAS_* or HF_* variables: what workers see of those came through the
    job's runtime_env. Its temp dir is private, so no other Ray on this machine finds it.
    """
    pytest.importorskip("ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "ATLAS_", "HF_"))}
    env["RAY_AUTH_MODE"] = "token"  # Ray's default for `ray start`, said explicitly
    log = open(temp / "start.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port", "0",
                             "--num-cpus", "2", "--temp-dir", str(temp), "--include-dashboard",
                             "false", "--disable-usage-stats", "--object-store-memory",
                             str(200 * 2**20), "--block"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        address = _wait_for_head(temp, proc)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        _kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_head(temp, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ray start exited: " + (temp / "start.log").read_text()[-2000:])
        f = temp / "ray_current_cluster"
        if f.is_file() and f.read_text().strip():
            host, _, port = f.read_text().strip().rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                return f"{host}:{port}"
            except OSError:
                pass
        time.sleep(0.5)
    raise RuntimeError("the Ray head did not come up: " + (temp / "start.log").read_text()[-2000:])


def _kill_leftovers(temp):
    """Any process still naming this cluster's temp dir (only ours), by pid."""
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(temp) in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


def _driver(suite, out, address, *extra, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_",)) and k != FAULT_DIR}
    return subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out",
                           str(out), "--executor", "ray", "--shards", "2", "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600,
                          # a driver outside the cluster sends the cluster's token (~/.ray) only
                          # when told to; inside `ray job submit` the job's environment says so
                          env={**env, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", **env_extra})


@pytest.mark.slow
def test_a_run_on_an_existing_cluster_through_ray_address_matches_a_local_run(ray_cluster,
                                                                             sharded_suite):
    root, suite = sharded_suite
    r = _driver(suite, root / "cluster", ray_cluster)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _without_keys(root / "cluster") == _without_keys(root / "local")  # byte for byte


def _without_keys(root):
    """Every file byte for byte, but compute keys blanked: a key covers the code on the compute
    path, which other sessions sharing this checkout may edit between the two runs."""
    files = _files(root)
    for name, data in files.items():
        if name.endswith("provenance.json") or name == "manifest.json":
            text = json.loads(data)
            for v in [text] + [v for v in text.values() if isinstance(v, dict)]:
                v.pop("cache_key", None)
                v.pop("key", None)
            files[name] = json.dumps(text, sort_keys=True).encode()
    return files


@pytest.mark.slow
def test_a_model_failing_on_the_cluster_fails_the_run(ray_cluster, sharded_suite, tmp_path):
    root, suite = sharded_suite
    (tmp_path / "singular-0.always").write_text("")
    # the fault hook reaches the workers only through the job's runtime_env (the cluster has none)
    r = _driver(suite, tmp_path / "out", ray_cluster, **{FAULT_DIR: str(tmp_path)})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "failed     tiny-gpt2" in r.stdout and "injected fault in singular shard 0" in r.stdout
