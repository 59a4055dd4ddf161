"""Faults: a kill at every stage, corrupt files of every kind, a full disk, out of memory, a second
run in the same folder, broken weights. After each, a rerun gives byte-identical artifacts (or a
named error) and nothing half-written is kept or published."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import save_tiny_folder, tiny_gpt2, write_suite

from generator import cli, fsutil, memory
from generator import pipeline as runner
from generator.errors import AtlasError, ModelLoadError
from generator.models import ModelSpec, load
from generator.suite import load_suite

VOLATILE = ("run.json", "summary.json", "history.json")
OFF = "".join(f"[experiments.{e}]\nenabled = false\n" for e in ("layerwise", "repeat", "vocab"))


def small_suite(path: Path, models: list[dict]) -> Path:
    """`write_suite` with only norms, positions and pos_embed: the cheap experiments."""
    write_suite(path, models, OFF)
    path.write_text(path.read_text().replace("[experiments.attn_vs_mlp]\n",
                                             "[experiments.attn_vs_mlp]\nenabled = false\n"))
    return path

# A driver that SIGKILLs the CLI itself on the n-th call of one function (optionally only when
# its first argument is a path with a given name): the process dies exactly at that stage.
DRIVER = """
import importlib, os, signal, subprocess, sys, time
module, attr, nth, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
target = importlib.import_module(module)
*owners, attr = attr.split(".")
for owner in owners:  # a method: patch it on its class
    target = getattr(target, owner)
orig, calls = getattr(target, attr), [0]
def kill_here(*args, **kwargs):
    if name == "-" or (args and getattr(args[0], "name", None) == name):
        calls[0] += 1
        if calls[0] >= nth:
            if attr == "run" and module.endswith("render"):  # kill while mkdocs is building
                subprocess.Popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)
    return orig(*args, **kwargs)
setattr(target, attr, kill_here)
from generator import cli
sys.exit(cli.main(sys.argv[5:]))
"""

STAGES = [  # (module, function, n-th call, only when the path is named) in forward order
    ("generator.models", "load", 1, "-"),                      # weights loaded, nothing captured
    ("generator.capture.hooks", "Capture.run", 2, "-"),        # mid-capture, second batch
    ("generator.pipeline", "_check_result", 2, "-"),           # one entry stored, next computed
    ("generator.artifacts", "write_atomic", 1, "manifest.json"),  # entry swapped in, not recorded
    ("generator.site.history", "update", 1, "-"),              # every entry done, no history yet
    ("generator.site.render", "swap_in", 1, "-"),              # docs rendered, not swapped in
    ("generator.site.render", "subprocess.run", 1, "-"),       # during mkdocs build
]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in VOLATILE}


def _cmd(suite: Path, root: Path) -> list[str]:
    return ["site", "--suite", str(suite), "--out", str(root / "out"), "--docs",
            str(root / "docs"), "--site", str(root / "site")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A small uninterrupted build (one tiny GPT-2, three experiments) to compare against."""
    root = tmp_path_factory.mktemp("faults")
    model = save_tiny_folder(root / "tiny-gpt2", tiny_gpt2())
    suite = small_suite(root / "suite.toml", [{"name": "tiny-gpt2", "path": str(model)}])
    assert cli.main(_cmd(suite, root / "ref")) == 0
    return root, suite


@pytest.mark.slow
def test_a_kill_at_every_stage_then_a_rerun_gives_identical_artifacts(reference, tmp_path):
    root, suite = reference
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for module, attr, nth, name in STAGES:
        r = subprocess.run([sys.executable, str(driver), module, attr, str(nth), name,
                            *_cmd(suite, tmp_path)], env=env, capture_output=True, text=True,
                           timeout=600)
        # killed by its own SIGKILL: the stage was reached, it did not just finish or fail
        assert r.returncode == -signal.SIGKILL, (module, attr, r.returncode, r.stderr[-2000:])
    assert cli.main(_cmd(suite, tmp_path)) == 0
    assert _files(root / "ref/out") == _files(tmp_path / "out")
    for folder in ("out", "docs", "site"):
        assert not list((tmp_path / folder).rglob(".*tmp-*")), folder
        assert not list((tmp_path / folder).rglob(".*old-*")), folder
    assert not list(tmp_path.glob(".*tmp-*")) and not list(tmp_path.glob(".*old-*"))
    assert (tmp_path / "site/norms.html").is_file()


def test_corrupt_files_of_every_kind_are_rebuilt_or_tolerated(reference, tmp_path):
    from generator.site import render

    root, suite = reference
    out = tmp_path / "out"
    shutil.copytree(root / "ref/out", out)
    torn = {  # hashed files: rebuilt; bookkeeping files: read tolerantly and rewritten
        "tiny-gpt2/norms/result.json": "rebuilt", "tiny-gpt2/positions/provenance.json": "rebuilt",
        "tiny-gpt2/pos_embed/run.json": "kept", "tiny-gpt2/status.json": "kept",
        "summary.json": "kept", "history.json": "kept"}
    table = next((out / "tiny-gpt2/pos_embed").glob("*.table.json"))
    torn[str(table.relative_to(out))] = "rebuilt"
    for rel in torn:
        (out / rel).write_text('{"truncated": [1, 2')
    s = runner.run(load_suite(suite), out, progress=False)
    assert sorted(s.rebuilt) == ["tiny-gpt2/norms", "tiny-gpt2/pos_embed", "tiny-gpt2/positions"]
    assert _files(root / "ref/out") == _files(out)
    render.render(out, tmp_path / "docs")  # a torn run.json is shown as unknown, not a crash
    (out / "manifest.json").write_text("[1, 2")  # the manifest itself: everything is rebuilt
    s = runner.run(load_suite(suite), out, progress=False)
    assert len(s.generated) == 3 and _files(root / "ref/out") == _files(out)


def _fail_fsync_under(folder: str):
    real = os.fsync

    def fsync(fd: int) -> None:
        if folder in os.readlink(f"/proc/self/fd/{fd}").rsplit("/tiny-gpt2/", 1)[-1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    return fsync


def test_a_full_disk_is_named_and_loses_nothing(reference, tmp_path, monkeypatch, capsys):
    root, suite = reference
    changed = tmp_path / "s.toml"
    changed.write_text(suite.read_text() + "[experiments.norms]\nmiddle_fraction = 0.4\n")
    for name in ("full", "clean"):
        shutil.copytree(root / "ref/out", tmp_path / name)
    before = _files(tmp_path / "full")
    monkeypatch.setattr(fsutil.os, "fsync", _fail_fsync_under("norms"))
    code = cli.main(["run", "--suite", str(changed), "--out", str(tmp_path / "full"),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "fix:" in err, err
    assert "Traceback" not in err and "report" not in err
    assert _files(tmp_path / "full") == before  # the old norms entry and its record are intact
    assert not list((tmp_path / "full").rglob(".*tmp-*"))
    monkeypatch.undo()
    assert cli.main(["run", "--suite", str(changed), "--out", str(tmp_path / "full"),
                     "--no-progress"]) == 0
    assert cli.main(["run", "--suite", str(changed), "--out", str(tmp_path / "clean"),
                     "--no-progress"]) == 0
    assert _files(tmp_path / "full") == _files(tmp_path / "clean")


def test_a_second_run_into_the_same_folder_is_refused_and_a_killed_holder_frees_it(reference,
                                                                                    tmp_path):
    root, suite = reference
    out = tmp_path / "out"
    shutil.copytree(root / "ref/out", out)
    with fsutil.exclusive(out):
        with pytest.raises(AtlasError, match="another run is writing to this folder") as e:
            runner.run(load_suite(suite), out, progress=False)
        assert "--out" in e.value.fix
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from generator import fsutil\n"
        f"with fsutil.exclusive(__import__('pathlib').Path({str(out)!r})):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out",
                        str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "another run is writing" in r.stderr and "Traceback" not in r.stderr
    holder.kill()
    holder.wait()
    s = runner.run(load_suite(suite), out, progress=False)  # the kernel dropped the dead lock
    assert len(s.cached) == 3


def test_out_of_memory_is_named_per_model_and_the_others_still_build(reference, tmp_path,
                                                                    monkeypatch):
    from generator import executors

    root, suite = reference
    two = small_suite(tmp_path / "two.toml", [
        {"name": "a", "path": str(root / "tiny-gpt2")}, {"name": "b", "path": str(root / "tiny-gpt2")}])
    real = executors.Local.capture

    def capture(self, token_inputs, sinks, label, spill=None):
        if label.startswith("a "):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 8589934592 bytes")
        return real(self, token_inputs, sinks, label, spill)
    monkeypatch.setattr(executors.Local, "capture", capture)
    s = runner.run(load_suite(two), tmp_path / "out", progress=False)
    assert "ran out of memory" in s.skipped["a"] and "batch_size" in s.skipped["a"]
    assert sorted(s.generated) == ["b/norms", "b/pos_embed", "b/positions"]
    assert s.exit_code() == 0 and s.exit_code(strict=True) == 1


def test_statistics_that_cannot_fit_are_refused_before_the_first_forward(reference, tmp_path,
                                                                         monkeypatch):
    from generator import models

    root, suite = reference
    monkeypatch.setattr(models, "check_fits", lambda *a: None)  # the weights would fit
    monkeypatch.setattr(memory, "available", lambda device: (50_000, "RAM"))
    s = runner.run(load_suite(suite), tmp_path / "out", progress=False)
    why = s.skipped["tiny-gpt2"]
    assert "statistics and activations need about" in why and "seq_len" in why
    assert s.forwards == 0 and s.exit_code() == 3 and s.outcome().startswith("failed")


def test_memory_limits_of_cgroups_are_read(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    assert memory.cgroup_free(v2) is None
    (v2 / "memory.max").write_text("4000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    assert memory.cgroup_free(v2) == 3_000_000_000
    v1 = tmp_path / "v1/memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("2000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("500000000\n")
    assert memory.cgroup_free(tmp_path / "v1") == 1_500_000_000


def test_nan_or_inf_weights_are_refused_by_name(tmp_path):
    model = tiny_gpt2()
    with torch.no_grad():
        model.h[1].mlp.c_fc.weight[3, 5] = float("nan")
        model.h[1].mlp.c_fc.weight[4, 5] = float("inf")
    path = save_tiny_folder(tmp_path / "nan", model)
    with pytest.raises(ModelLoadError) as e:
        load(ModelSpec(name="nan", path=str(path)))
    assert "2 NaN or infinite" in e.value.cause and "h.1.mlp.c_fc.weight" in e.value.cause
    assert "download it again" in e.value.fix


def test_exit_status_says_what_ci_can_rely_on(reference, tmp_path):
    root, suite = reference
    only_missing = write_suite(tmp_path / "m.toml", [{"name": "gone", "path": str(tmp_path / "no")}])
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(only_missing),
                        "--out", str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 3 and "outcome: failed: no model could be built" in r.stdout, r.stdout
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert summary["outcome"].startswith("failed")
    both = small_suite(tmp_path / "b.toml", [{"name": "tiny-gpt2", "path": str(root / "tiny-gpt2")},
                                             {"name": "gone", "path": str(tmp_path / "no")}])
    s = runner.run(load_suite(both), tmp_path / "o2", progress=False)
    assert s.exit_code() == 0 and s.exit_code(strict=True) == 1 and s.outcome().startswith("partial")


def test_activations_that_overflow_are_named_not_blamed_on_the_wiring(tmp_path):
    model = tiny_gpt2()
    with torch.no_grad():  # finite weights whose MLP output overflows float32
        model.h[0].mlp.c_fc.weight.fill_(1e30)
        model.h[0].mlp.c_proj.weight.fill_(1e30)
    path = save_tiny_folder(tmp_path / "overflow", model)
    suite = small_suite(tmp_path / "s.toml", [{"name": "overflow", "path": str(path)}])
    s = runner.run(load_suite(suite), tmp_path / "out", progress=False)
    why = s.skipped["overflow"]
    assert "NaN or infinite values" in why and "not a wiring problem" in why and "bfloat16" in why
