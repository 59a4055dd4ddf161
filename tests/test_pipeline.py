import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_suite

from generator import pipeline as runner
from generator.experiment import registry
from generator.suite import load_suite

ALL = set(registry())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "summary.json", "history.json")}


def _difference(want: dict[str, bytes], got: dict[str, bytes]) -> str:
    """The files that differ, and the changed lines of the first differing artifact (not the
    manifest, which differs whenever one does): what a rare failure needs to be understood."""
    import difflib

    keys = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    shown = next((k for k in keys if k in want and k in got and "manifest" not in k), None)
    lines = [] if shown is None else difflib.unified_diff(
        want[shown].decode(errors="replace").splitlines(),
        got[shown].decode(errors="replace").splitlines(), shown, "rerun", lineterm="", n=1)
    return "\n".join([f"differing files: {keys}", *list(lines)[:40]])


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
    assert summary.not_applicable["tiny-llama/pos_embed"].startswith("tiny-llama uses rotary")
    assert "tiny-llama/pos_embed" not in summary.skipped
    assert "hub" in summary.skipped["offline"]
    status = json.loads((root / "a/offline/status.json").read_text())
    assert status["status"] == "skipped" and "fix:" in status["reason"]
    for name, exp in registry().items():
        folder = root / "a/tiny-gpt2" / name
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["model"]["sha256"] and prov["versions"]["torch"] and prov["seed"] == 7
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "ok" and set(result["metrics"]) == set(exp.metrics), name
        for t in result["tables"]:
            assert isinstance(json.loads((folder / f"{t}.table.json").read_text()), list)
    na = json.loads((root / "a/tiny-llama/pos_embed/result.json").read_text())
    assert na["status"] == "not_applicable" and "rotary" in na["notes"][0]


def test_charts_are_drawn_from_stored_results_as_valid_vega_lite(built):
    import jsonschema
    from altair.vegalite.v6.schema import load_schema

    from generator.experiment import ChartView
    from generator.site.chart_files import chart_files
    from generator.site.findings import load_build

    validator = jsonschema.Draft7Validator(load_schema())
    model = next(m for m in load_build(built[0] / "a")["models"] if m.name == "tiny-gpt2")
    n = 0
    for name, exp in registry().items():
        for cname, chart in exp.charts(model.experiments[name].result,
                                       ChartView("tiny-gpt2", 7, 100)).items():
            files = chart_files(cname, chart, "tiny-gpt2 · seed 7", {"provenance": {}})
            spec = json.loads(files[f"{cname}.vl.json"])
            rows = json.loads(files[f"{cname}.data.json"])
            spec["data"] = {"values": rows}
            validator.validate(spec)
            assert "seed 7" in spec["title"]["subtitle"][-1]
            assert files[f"{cname}.svg"].lstrip().startswith("<svg"), cname
            if '"circle"' in files[f"{cname}.vl.json"]:  # scatters respect the cap
                assert len(rows) <= 100, (name, cname, len(rows))
            n += 1
    assert n >= 15


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
    target = tmp_path / "c/tiny-gpt2/layerwise/result.json"
    target.write_text(target.read_text().replace("0", "1", 1))
    s = runner.run(load_suite(changed), tmp_path / "c", progress=False)
    assert s.generated == ["tiny-gpt2/layerwise"]
    assert "does not match its recorded hash" in s.rebuilt["tiny-gpt2/layerwise"]
    assert target.read_bytes() == (root / "a/tiny-gpt2/layerwise/result.json").read_bytes()


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
    want, got = _files(root / "a"), _files(out)
    assert want == got, _difference(want, got)
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
    import dataclasses

    from generator import experiment

    def broken(*_args):
        raise ValueError("boom")

    experiments = dict(registry())
    experiments["vocab"] = dataclasses.replace(experiments["vocab"], compute=broken)
    monkeypatch.setattr(experiment, "registry", lambda: experiments)
    monkeypatch.setattr(runner, "registry", lambda: experiments)
    s = runner.run(load_suite(built[1]), tmp_path / "f", only=["tiny-gpt2"], progress=False)
    assert "boom" in s.skipped["tiny-gpt2/vocab"] and "please report" in s.skipped["tiny-gpt2/vocab"]
    assert len(s.generated) == len(ALL) - 1
    again = runner.run(load_suite(built[1]), tmp_path / "f", only=["tiny-gpt2"], progress=False)
    assert "tiny-gpt2/vocab" in again.skipped  # never cached: retried on the next run


def test_claims_follow_the_measurement_and_are_not_applicable_only_where_the_page_is(built):
    from generator.site.findings import claims_for, load_build

    build = load_build(built[0] / "a")
    thresholds = build["summary"]["claims"]
    by_model = {m.name: {c["text"].split(" (")[0]: c for c in claims_for(m, thresholds)}
                for m in build["models"]}
    gpt2, llama = by_model["tiny-gpt2"], by_model["tiny-llama"]
    assert gpt2["learned position components are periodic"]["verdict"] in ("holds", "does not hold")
    na = llama["learned position components are periodic"]
    assert na["verdict"] == "n/a" and "rotary" in na["why"]
    # measured on every model: the verdict must come from the number, rotary or not
    residual = llama["residual position components are periodic"]
    assert residual["verdict"] in ("holds", "does not hold")
    measured = json.loads((built[0] / "a/tiny-llama/positions/result.json").read_text())
    value = measured["metrics"]["raw_periodicity"]
    assert (residual["verdict"] == "holds") == (value >= thresholds["position_periodicity_min"])
    assert not by_model["offline"]
