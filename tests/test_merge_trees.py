"""`merge`: per-model artifact trees joined into the tree one run of every model writes."""

import datetime
import json
import shutil
import subprocess
import sys
import types

import pytest
from helpers import only_experiments, write_suite

from generator import merge
from generator import pipeline as runner
from generator.errors import AtlasError
from generator.site import history
from generator.suite import load_suite

CHEAP = ("norms", "positions", "pos_embed")


def _files(root, skip=("run.json",)):
    """Every file but run.json (dates) and `.lock` (the run's process lock, always empty)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and p.name != ".lock"}


@pytest.fixture(scope="module")
def runs(tiny_folders, tmp_path_factory):
    """Two single-model runs and one run of both, on the same (fixed) day."""
    root = tmp_path_factory.mktemp("merge")
    suite = only_experiments(write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])},
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"])}]), CHEAP)
    day = types.SimpleNamespace(date=types.SimpleNamespace(today=lambda: datetime.date(2026, 11, 27)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(history, "datetime", day)
        for name, only in (("gpt2", ["tiny-gpt2"]), ("llama", ["tiny-llama"]), ("both", None)):
            s = runner.run(load_suite(suite), root / name, only, progress=False)
            assert not s.skipped, s.skipped
    return root, suite


def test_a_merge_of_two_single_model_runs_equals_one_run_of_both(runs, tmp_path):
    root, suite = runs
    report = merge.merge([root / "gpt2", root / "llama"], tmp_path / "m",
                         [m.name for m in load_suite(suite).models])
    assert _files(tmp_path / "m") == _files(root / "both")  # summary, manifest, history included
    assert report.sources == {"tiny-gpt2": str(root / "gpt2"), "tiny-llama": str(root / "llama")}
    # the other order gives the same bytes: each model has one source
    merge.merge([root / "llama", root / "gpt2"], tmp_path / "r",
                [m.name for m in load_suite(suite).models])
    assert _files(tmp_path / "r") == _files(root / "both")


def test_a_model_whose_job_failed_keeps_its_published_build(runs, tmp_path):
    root, suite = runs
    broken = tmp_path / "broken.toml"
    broken.write_text(suite.read_text().replace(str(root.parent), "/nonexistent"))
    fresh = runner.run(load_suite(broken), tmp_path / "fresh", ["tiny-llama"], progress=False)
    assert "tiny-llama" in fresh.skipped
    merge.merge([root / "both", tmp_path / "fresh"], tmp_path / "m", ["tiny-gpt2", "tiny-llama"])
    got = json.loads((tmp_path / "m/tiny-llama/status.json").read_text())
    assert got["status"] == "ok"
    assert _files(tmp_path / "m/tiny-llama") == _files(root / "both/tiny-llama")
    assert json.loads((tmp_path / "m/summary.json").read_text())["skipped"] == {}


def test_torn_entries_are_left_out_and_missing_models_recorded_as_skipped(runs, tmp_path):
    root, _ = runs
    shutil.copytree(root / "gpt2", tmp_path / "gpt2")
    torn = tmp_path / "gpt2/tiny-gpt2/norms/result.json"
    torn.write_text(torn.read_text()[:20])
    report = merge.merge([tmp_path / "gpt2"], tmp_path / "m", ["tiny-gpt2", "gone"])
    manifest = json.loads((tmp_path / "m/manifest.json").read_text())
    assert "tiny-gpt2/norms" not in manifest and "tiny-gpt2/positions" in manifest
    assert not (tmp_path / "m/tiny-gpt2/norms").exists()
    assert report.dropped and "does not match its recorded hash" in report.dropped[0]
    summary = json.loads((tmp_path / "m/summary.json").read_text())
    assert summary["models"] == ["tiny-gpt2", "gone"] and "no artifact tree has it" in summary["skipped"]["gone"]
    status = json.loads((tmp_path / "m/gone/status.json").read_text())
    assert status["status"] == "skipped" and "fix:" in status["reason"]


def test_history_joins_revisions_across_trees_and_is_pruned():
    def tree(entries):
        return merge.Tree(None, {"models": []}, None, {"m": entries})

    def e(ident, day):
        return {"ident": ident, "date": day, "first_seen": day, "headlines": {}, "claims": {}}

    published = tree([e("r1", "2026-01-01"), e("r2", "2026-02-01")])
    fresh = tree([e("r2", "2026-03-01")])  # the same revision rebuilt: updated in place
    newer = tree([e("r3", "2026-04-01")])
    joined = merge.join_history([published, fresh, newer])["m"]
    assert [(x["ident"], x["first_seen"], x["date"]) for x in joined] == [
        ("r1", "2026-01-01", "2026-01-01"), ("r2", "2026-02-01", "2026-03-01"),
        ("r3", "2026-04-01", "2026-04-01")]
    assert [x["ident"] for x in merge.join_history([published, newer], keep=2)["m"]] == ["r2", "r3"]
    assert len(history.changes({"m": joined})) == 2  # the changelog reads it as before


def test_merge_cli_refuses_a_folder_that_is_no_artifact_tree(runs, tmp_path):
    root, suite = runs
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "generator", "merge", str(root / "gpt2"),
                        str(tmp_path / "empty"), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not an artifact tree" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(AtlasError, match="also one of the trees"):
        merge.merge([root / "gpt2"], root / "gpt2")


NO_TORCH = "import sys; sys.modules['torch'] = None; from generator.cli import main; sys.exit(main())"


def test_the_site_is_built_from_merged_artifacts_without_torch(runs, tmp_path):
    root, suite = runs
    merge.merge([root / "gpt2", root / "llama"], tmp_path / "m", ["tiny-gpt2", "tiny-llama"])
    r = subprocess.run([sys.executable, "-c", NO_TORCH, "site", "--no-run", "--out", str(tmp_path / "m"),
                        "--docs", str(tmp_path / "docs"), "--site", str(tmp_path / "site")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "site/index.html").is_file()
    assert "tiny-llama" in (tmp_path / "site/index.html").read_text()
