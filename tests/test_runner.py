import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_suite

from generator import runner
from generator.suite import load_suite

ALL = {"norms", "attn_vs_mlp", "layerwise", "positions", "pos_embed", "repeat", "vocab"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "summary.json", "history.json")}


@pytest.fixture(scope="module")
def built(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    suite = write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])},
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"])},
        {"name": "offline", "id": "openai-community/gpt2"}])
    summary = runner.run(load_suite(suite), root / "a", progress=False)
    return root, suite, summary


def test_every_experiment_writes_artifacts_on_both_architectures(built):
    root, _, summary = built
    assert {e.split("/")[1] for e in summary.generated if e.startswith("tiny-gpt2")} == ALL
    assert summary.skipped["tiny-llama/pos_embed"].startswith("tiny-llama uses rotary")
    assert "not built yet" not in summary.skipped.get("offline", "")
    assert "hub" in summary.skipped["offline"]
    status = json.loads((root / "a/offline/status.json").read_text())
    assert status["status"] == "skipped" and "fix:" in status["reason"]
    for exp in ALL:
        folder = root / "a/tiny-gpt2" / exp
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["model"]["sha256"] and prov["versions"]["torch"] and prov["seed"] == 7
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics and all(isinstance(m["value"], float | int) and math.isfinite(m["value"])
                               and m["meaning"] for m in metrics.values()), exp
        assert prov["charts"], exp
        for c in prov["charts"]:
            assert (folder / f"{c}.svg").read_text().lstrip().startswith("<svg"), c
            if '"circle"' in (folder / f"{c}.vl.json").read_text():  # scatters respect the cap
                rows = json.loads((folder / f"{c}.data.json").read_text())
                assert len(rows) <= 100, (exp, c, len(rows))


def test_chart_specs_are_valid_vega_lite_and_carry_provenance(built):
    import jsonschema
    from altair.vegalite.v6.schema import load_schema

    validator = jsonschema.Draft7Validator(load_schema())
    root = built[0]
    specs = sorted((root / "a/tiny-gpt2").rglob("*.vl.json"))
    assert len(specs) >= 15
    for p in specs:
        spec = json.loads(p.read_text())
        spec["data"] = {"values": json.loads(p.with_name(p.name.replace(".vl.", ".data.")).read_text())}
        validator.validate(spec)
        assert spec["usermeta"]["provenance"]["model"]["model"] == "tiny-gpt2"
        assert "seed 7" in spec["title"]["subtitle"][-1]


def test_rerun_is_byte_identical_and_cached_run_does_no_forward(built, tmp_path):
    root, suite, _ = built
    again = runner.run(load_suite(suite), tmp_path / "b", progress=False)
    assert again.forwards > 0
    assert _files(root / "a") == _files(tmp_path / "b")
    cached = runner.run(load_suite(suite), tmp_path / "b", progress=False)
    assert cached.forwards == 0 and not cached.generated and len(cached.cached) == 2 * len(ALL)


def test_param_change_reruns_one_experiment_and_tampering_is_rebuilt(built, tmp_path):
    root, suite, _ = built
    import shutil

    shutil.copytree(root / "a", tmp_path / "c")
    changed = tmp_path / "s.toml"
    changed.write_text(suite.read_text() + "\n[experiments.norms]\nmiddle_fraction = 0.4\n")
    s = runner.run(load_suite(changed), tmp_path / "c", progress=False)
    assert sorted(s.generated) == ["tiny-gpt2/norms", "tiny-llama/norms"]
    target = tmp_path / "c/tiny-gpt2/layerwise/metrics.json"
    target.write_text(target.read_text().replace("0", "1", 1))
    s = runner.run(load_suite(changed), tmp_path / "c", progress=False)
    assert s.generated == ["tiny-gpt2/layerwise"]
    assert "does not match its recorded hash" in s.rebuilt["tiny-gpt2/layerwise"]
    assert target.read_bytes() == (root / "a/tiny-gpt2/layerwise/metrics.json").read_bytes()


def test_sigkill_mid_run_then_rerun_gives_identical_artifacts(built, tmp_path):
    root, suite, _ = built
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    deadline = time.time() + 120
    while time.time() < deadline and not (out / "tiny-gpt2/layerwise").exists():
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _files(root / "a") == _files(out)
    assert not list(out.rglob(".*tmp-*"))


def test_cli_errors_print_without_traceback_and_strict_fails_on_skips(built, tmp_path):
    root, suite, _ = built
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "seed" in r.stderr and "fix:" in r.stderr
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out",
                        str(root / "a"), "--strict", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "skipped    offline" in r.stdout and "Traceback" not in r.stderr


def test_a_failing_experiment_is_skipped_with_its_reason_and_the_rest_is_built(built, tmp_path, monkeypatch):
    from generator.experiments import vocab

    def broken(*_args):
        raise ValueError("boom")

    monkeypatch.setattr(vocab, "build", broken)
    s = runner.run(load_suite(built[1]), tmp_path / "f", only=["tiny-gpt2"], progress=False)
    assert "boom" in s.skipped["tiny-gpt2/vocab"] and "please report" in s.skipped["tiny-gpt2/vocab"]
    assert len(s.generated) == len(ALL) - 1
    again = runner.run(load_suite(built[1]), tmp_path / "f", only=["tiny-gpt2"], progress=False)
    assert "tiny-gpt2/vocab" in again.skipped  # never cached: retried on the next run


def test_claims_judge_gpt2_periodicity_but_call_it_not_applicable_on_rotary_models(built):
    from generator.findings import claims_for, load_build

    build = load_build(built[0] / "a")
    thresholds = build["summary"]["claims"]
    by_model = {m["name"]: {c["text"].split(" (")[0]: c for c in claims_for(m, thresholds)}
                for m in build["models"]}
    gpt2, llama = by_model["tiny-gpt2"], by_model["tiny-llama"]
    assert gpt2["learned position components are periodic"]["verdict"] in ("holds", "does not hold")
    na = llama["learned position components are periodic"]
    assert na["verdict"] == "n/a" and "rotary" in na["why"]
    assert llama["residual position components are periodic"]["verdict"] == "n/a"
    assert llama["attention and MLP outputs are linearly separable above 0.9 in middle blocks"][
        "verdict"] in ("holds", "does not hold")
    assert "offline" not in by_model or not by_model["offline"]
