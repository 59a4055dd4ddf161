"""Release watch and lock: which commit of each hub model a report is built from.

`models.lock.json` records, per suite model, the hub id, the revision the suite asks for, the commit
sha it resolved to and when the hub last changed it (`last_modified`). `releases --update` asks the
hub and rewrites the lock; `run` and `site` build each hub model at its locked sha (`pin`), so the
download and the cache key follow the lock, never whatever the local Hugging Face cache's
`refs/main` happens to point at (a restored old cache would otherwise hide a new release, and
what was built would not be what the lock says). A model missing from the lock is an error when
the `CI` environment variable is set (CI builds only what was reviewed into the lock) and a note
locally (it is built from the cache's revision, as before).

A revision pinned in the suite is respected: a commit sha is taken as is (no request), a branch or
tag is resolved to its commit. Optional `[[watch]]` suite entries list the newest models of an
author or search on the hub as candidates in the release pull request; nothing joins the suite
automatically.

Exit codes (distinct so a workflow can branch on them): 0 up to date (or lock updated with
`--update`), 1 a revision changed and the lock was not updated, 3 at least one model could not be
checked (offline, hub unreachable, timeout, server error, unknown repository).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.artifacts import dumps, write_atomic
from generator.errors import AtlasError
from generator.models import ModelSpec
from generator.suite import Suite

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CHANGED, EXIT_UNCHECKED = 0, 1, 3
SHA = re.compile(r"^[0-9a-f]{40}$")
LOCK_FILE = "models.lock.json"
"""The lock's name; `run` looks for it beside the suite file unless `--lock` says otherwise."""


@dataclass
class Row:
    model: str
    id: str
    revision: str
    locked: str | None
    current: str | None = None
    status: str = "error"
    """unchanged, changed, new (not in the lock yet), pinned (a sha in the suite), or error."""
    detail: str = ""
    last_modified: str | None = None
    """When the hub last changed the repository (ISO 8601), as `model_info` reports it."""

    @property
    def checked(self) -> bool:
        return self.current is not None


@dataclass
class Candidate:
    """A hub model a `[[watch]]` entry found that the suite does not build yet."""

    watch: str
    id: str
    last_modified: str | None


def read_lock(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AtlasError(str(path), f"not valid JSON ({exc})",
                         "restore it from git, or delete it and run `releases --update`") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise AtlasError(str(path), "expected an object with a \"models\" table",
                         "restore it from git, or delete it and run `releases --update`")
    return data


def lock_path_for(suite: Suite, given: Path | None = None) -> Path:
    """The lock a run uses: `--lock` when given, else `models.lock.json` beside the suite file."""
    if given is not None:
        return Path(given)
    return (Path(suite.path).parent if suite.path else Path(".")) / LOCK_FILE


def ci_mode() -> bool:
    """True on CI services (GitHub Actions, GitLab, Buildkite... all set `CI`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def locked_sha(spec: ModelSpec, lock: dict[str, Any]) -> tuple[str | None, str]:
    """The commit `spec` must be built from, or None and why the lock cannot say."""
    wanted = spec.revision or "main"
    entry = lock["models"].get(spec.name)
    if isinstance(entry, dict) and entry.get("id") == spec.id and entry.get("revision") == wanted \
            and isinstance(entry.get("sha"), str) and SHA.match(entry["sha"]):
        return entry["sha"], ""
    if SHA.match(wanted):
        return wanted, ""  # pinned in the suite: nothing to look up
    if not isinstance(entry, dict):
        return None, "not in the lock"
    return None, (f"the lock's entry is for {entry.get('id')}@{entry.get('revision')}, the suite "
                  f"asks for {spec.id}@{wanted}")


def pin(specs: list[ModelSpec], lock_path: Path, ci: bool | None = None
        ) -> tuple[list[ModelSpec], list[str]]:
    """Each hub model with `revision` set to its locked commit; returns (specs, notes).

    Local and embedded models are identified by their file hashes and need no lock. Raises when
    `ci` (default: the `CI` variable is set) and a hub model has no usable lock entry.
    """
    ci = ci_mode() if ci is None else ci
    lock = read_lock(lock_path)
    out: list[ModelSpec] = []
    missing: list[tuple[str, str]] = []
    for spec in specs:
        if not spec.id:
            out.append(spec)
            continue
        sha, why = locked_sha(spec, lock)
        if sha is None:
            missing.append((spec.name, why))
            out.append(spec)
            continue
        out.append(dataclasses.replace(spec, revision=sha))
    if missing and ci:
        raise AtlasError(f"{lock_path}: " + ", ".join(f"{n} ({why})" for n, why in missing),
                         "a CI run (CI is set) builds hub models only at the commit the lock "
                         "records, and these have none",
                         "run `make releases` (python -m generator releases --update), review and "
                         "commit models.lock.json; or unset CI for a local run")
    notes = [f"{name}: {why} ({lock_path}); built from the revision in the local Hugging Face "
             "cache; `make releases` pins it" for name, why in missing]
    return out, notes


def check(suite: Suite, lock: dict[str, Any], endpoint: str | None = None,
          timeout: float = 10.0) -> list[Row]:
    """One row per hub model in the suite; local and embedded models have no release to watch."""
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=endpoint)
    rows = []
    for spec in suite.models:
        if not spec.id:
            continue
        wanted = spec.revision or "main"
        entry = lock["models"].get(spec.name, {})
        row = Row(spec.name, spec.id, wanted, entry.get("sha"))
        rows.append(row)
        if SHA.match(wanted):
            row.current, row.status, row.detail = wanted, "pinned", "commit pinned in the suite"
            row.last_modified = entry.get("last_modified") if entry.get("sha") == wanted else None
            continue
        if constants.HF_HUB_OFFLINE:
            row.detail = "offline (HF_HUB_OFFLINE is set): cannot check"
            continue
        try:
            info = api.model_info(spec.id, revision=spec.revision, timeout=timeout)
        except Exception as exc:  # noqa: BLE001  (every failure is reported per model, never raised)
            row.detail = _explain(exc, api.endpoint, timeout)
            continue
        row.current = info.sha
        row.last_modified = _iso(getattr(info, "last_modified", None))
        if row.locked is None:
            row.status = "new"
        else:
            row.status = "unchanged" if row.locked == row.current else "changed"
    return rows


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def candidates(suite: Suite, endpoint: str | None = None, timeout: float = 10.0
               ) -> tuple[list[Candidate], list[str]]:
    """The newest hub models each `[[watch]]` entry finds, minus those already in the suite.

    Returns (candidates, problems): a query that fails is reported, never raised, so the release
    pull request still records the revisions that were checked.
    """
    if not suite.watch:
        return [], []
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return [], ["offline (HF_HUB_OFFLINE is set): [[watch]] entries were not checked"]
    api = HfApi(endpoint=endpoint)
    known = {m.id for m in suite.models if m.id}
    found: list[Candidate] = []
    problems: list[str] = []
    for w in suite.watch:
        label = " ".join(f"{k}={v}" for k, v in (("author", w.author), ("search", w.search)) if v)
        try:
            infos = list(api.list_models(author=w.author, search=w.search, sort="last_modified",
                                         limit=w.limit))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"watch {label}: {_explain(exc, api.endpoint, timeout)}")
            continue
        for info in infos:
            if info.id not in known and info.id not in {c.id for c in found}:
                found.append(Candidate(label, info.id, _iso(getattr(info, "last_modified", None))))
    return found, problems


def _explain(exc: Exception, endpoint: str, timeout: float) -> str:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    name = type(exc).__name__
    if isinstance(exc, RevisionNotFoundError):
        return "revision not found on the hub: fix `revision` in the suite"
    if isinstance(exc, RepositoryNotFoundError):
        return "repository not found on the hub (or private/gated): fix `id` in the suite"
    if "Timeout" in name:
        return f"the hub at {endpoint} did not answer within {timeout:g}s"
    if "Connect" in name or "Offline" in name:
        return f"the hub at {endpoint} is unreachable ({name})"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"the hub answered HTTP {status}; try again later"
    return f"could not check ({name}: {str(exc).splitlines()[0][:200]})"


def updated_lock(lock: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """The lock with every checked model's current sha; unchecked models keep their old entry."""
    models = dict(lock["models"])
    for r in rows:
        if r.checked:
            models[r.model] = {"id": r.id, "revision": r.revision, "sha": r.current,
                               "last_modified": r.last_modified}
    return {**lock, "models": models}


def exit_code(rows: list[Row], updated: bool) -> int:
    if any(not r.checked for r in rows):
        return EXIT_UNCHECKED
    if not updated and any(r.status in ("changed", "new") for r in rows):
        return EXIT_CHANGED
    return EXIT_OK


def report(rows: list[Row]) -> list[str]:
    if not rows:
        return ["no hub models in the suite: nothing to watch"]
    out = []
    for r in rows:
        locked = (r.locked or "—")[:12]
        current = (r.current or "?")[:12]
        line = f"{r.model:<16} {r.id + '@' + r.revision:<36} {locked:>12} -> {current:<12} {r.status}"
        out.append(line + (f": {r.detail}" if r.detail else ""))
    return out


def pr_body(rows: list[Row], found: list[Candidate], problems: list[str]) -> str:
    """Markdown for the release pull request: what changed, what could not be checked, candidates."""
    changed = [r for r in rows if r.status in ("changed", "new")]
    out = ["Opened by the release watch (`python -m generator releases --update`).", ""]
    if changed:
        out += ["| model | hub id | locked | new | last modified |", "|---|---|---|---|---|"]
        out += [f"| {r.model} | `{r.id}@{r.revision}` | `{(r.locked or 'none')[:12]}` | "
                f"`{(r.current or '?')[:12]}` | {r.last_modified or '?'} |" for r in changed]
        out += ["", "Merging rebuilds only these models (their cache keys follow the lock)."]
    else:
        out.append("No locked revision changed.")
    unchecked = [r for r in rows if not r.checked]
    if unchecked or problems:
        out += ["", "Not checked (their lock entries were left as they were):"]
        out += [f"- {r.model}: {r.detail}" for r in unchecked] + [f"- {p}" for p in problems]
    if found:
        out += ["", "New candidates from `[[watch]]` (not added: to build one, add a `[[models]]` "
                "table to the suite):", ""]
        out += [f"- [`{c.id}`](https://huggingface.co/{c.id}) ({c.watch}; last modified "
                f"{c.last_modified or '?'})" for c in found]
    return "\n".join(out) + "\n"


def main(suite: Suite, lock_path: Path, update: bool, endpoint: str | None, timeout: float,
         body: Path | None = None) -> int:
    lock = read_lock(lock_path)
    rows = check(suite, lock, endpoint, timeout)
    print("\n".join(report(rows)))
    found, problems = candidates(suite, endpoint, timeout)
    for c in found:
        print(f"candidate        {c.id} ({c.watch}; last modified {c.last_modified or '?'})")
    for p in problems:
        print(p)
    if update:
        new = updated_lock(lock, rows)
        if new != lock or not lock_path.is_file():
            write_atomic(lock_path, dumps(new))
            print(f"updated {lock_path}")
    if body is not None:
        write_atomic(body, pr_body(rows, found, problems))
    code = exit_code(rows, update)
    if code == EXIT_UNCHECKED:
        print("some models could not be checked; their lock entries were left as they were")
    elif code == EXIT_CHANGED:
        print("revisions changed: run with --update to record them, then `make site`")
    return code
