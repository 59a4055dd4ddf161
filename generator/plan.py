"""The CI plan: which suite models need a capture job, as a GitHub Actions matrix.

`python -m generator plan --published DIR` prints `{"include": [...]}` with one row per model
whose build key is not yet published: a model is published when every enabled experiment's
entry in the published artifact tree (`DIR/manifest.json`) carries the compute key this code,
this suite and the locked revision give now. So a new release (the lock moved), a changed
parameter or a changed reducer plans exactly the models it touches, and a push that changes
only a template plans none (the site is re-rendered from the published artifacts).

Each row says where and how its job runs, from the suite's per-model keys: `runner` (a runner
label; LLaMA-7B names a GPU or large runner), `dtype`, `big` (free the disk first, keep the
download out of the 10 GB Actions cache) and `revision` (the locked commit, for the job's own
Hugging Face cache key). A label must be one GitHub hosts or one listed under
`self-hosted-runner.labels` in `.github/actionlint.yaml`: a typo would otherwise queue a job
that never starts.

Computing a key needs no model download: hub models are identified by their locked commit, local
files by their hashes (the code digest imports the capture package, so torch must be installed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from generator import artifacts, cache, models, releases
from generator.errors import AtlasError
from generator.experiment import registry
from generator.suite import Suite

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "ubuntu-24.04"
"""The runner of a model that names none: GitHub's standard Linux runner (4 vCPU, 16 GB)."""
GITHUB_HOSTED = re.compile(
    r"(ubuntu-(latest|24\.04|22\.04)(-arm)?|ubuntu-slim|windows-(latest|2025|2022|11-arm)"
    r"|macos-(latest|26|15|14|13)(-xlarge|-large|-intel)?|self-hosted|linux|x64|arm64)")
"""Labels GitHub knows without configuration (actionlint's built-in list, Linux ones first)."""


def runner_labels(config: Path) -> set[str]:
    """The custom runner labels declared for actionlint (`self-hosted-runner.labels`)."""
    if not config.is_file():
        return set()
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AtlasError(str(config), f"not valid YAML ({str(exc).splitlines()[0]})",
                         "fix the syntax (see actionlint's docs/config.md)") from None
    labels = (data.get("self-hosted-runner") or {}).get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise AtlasError(f"{config}: self-hosted-runner.labels", "expected a list of strings",
                         "e.g. labels: [gpu-t4]")
    return set(labels)


def check_runner(model: str, label: str, known: set[str], config: Path) -> None:
    if GITHUB_HOSTED.fullmatch(label) or label in known:
        return
    raise AtlasError(f"[[models]] {model} runner {label!r}",
                     f"not a GitHub-hosted label and not listed in {config}",
                     f"add it under self-hosted-runner.labels in {config} (and register a runner "
                     "or larger runner with that label), or fix the spelling")


def build_keys(suite: Suite, spec: models.ModelSpec, params: dict[str, Any]) -> dict[str, str]:
    """Experiment name -> the compute key its entry must carry for this model, now."""
    fp = models.fingerprint(spec)
    return {name: cache.compute_key(suite, fp, registry()[name], p) for name, p in params.items()}


def published(tree: Path | None, model: str, keys: dict[str, str]) -> bool:
    """Every entry of `model` is in the published tree's manifest with the same key."""
    if tree is None:
        return False
    manifest = artifacts.read_json(tree / "manifest.json", {})
    if not isinstance(manifest, dict):
        return False
    return all(isinstance(manifest.get(f"{model}/{e}"), dict)
               and manifest[f"{model}/{e}"].get("key") == k for e, k in keys.items())


def plan(suite: Suite, published_tree: Path | None, config: Path, lock: Path | None = None,
         everything: bool = False) -> list[dict[str, Any]]:
    """The matrix rows: every model whose build is not published (all with `everything`)."""
    from generator.pipeline import experiment_params

    params = experiment_params(suite)
    specs, notes = releases.pin(list(suite.models), releases.lock_path_for(suite, lock))
    for n in notes:
        log.warning("%s", n)
    known = runner_labels(config)
    rows = []
    for spec in specs:
        runner = spec.runner or DEFAULT_RUNNER
        check_runner(spec.name, runner, known, config)
        try:
            keys = build_keys(suite, spec, params)
        except AtlasError as exc:  # its job will fail with the same words; planning goes on
            why = f"key unknown: {exc.cause}"
        else:
            if everything:
                why = "rebuild requested"
            elif published(published_tree, spec.name, keys):
                continue
            else:
                why = "not published at this key"
        rows.append({"model": spec.name, "runner": runner, "dtype": spec.dtype,
                     "big": spec.big, "revision": spec.revision or "none",
                     "cache": bool(spec.id) and not spec.big, "why": why})
    return rows


def main(suite: Suite, published_tree: Path | None, config: Path, lock: Path | None,
         everything: bool, github_output: bool) -> int:
    if published_tree is not None and not (published_tree / "manifest.json").is_file():
        log.warning("%s has no manifest.json: nothing is published yet, every model is planned",
                    published_tree)
        published_tree = None
    rows = plan(suite, published_tree, config, lock, everything)
    matrix = json.dumps({"include": rows}, sort_keys=True, separators=(",", ":"))
    print(matrix)
    for r in rows:
        print(f"plan: {r['model']} on {r['runner']} ({r['dtype']}): {r['why']}", file=sys.stderr)
    if not rows:
        print("plan: every model is published at its current key: no capture job", file=sys.stderr)
    if github_output:
        out = os.environ.get("GITHUB_OUTPUT")
        if not out:
            raise AtlasError("--github-output", "GITHUB_OUTPUT is not set (not in GitHub Actions)",
                             "drop the flag and read the matrix from stdout")
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"matrix={matrix}\ncount={len(rows)}\n")
    return 0
