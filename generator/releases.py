"""Release watch: ask the hub for each hub model's current commit and compare it with the lock file.

`models.lock.json` records, per suite model, the commit sha the last report was made from. CI runs
`python -m generator releases --update` before `make site`; a changed sha means that model's
cache key changes, so only that model is rebuilt, and the changelog records the new revision.
A revision pinned in the suite is respected: a commit sha is taken as is (no request), a branch
or tag is resolved to its commit.

Exit codes (distinct so a workflow can branch on them): 0 up to date (or lock updated with
`--update`), 1 a revision changed and the lock was not updated, 3 at least one model could not be
checked (offline, hub unreachable, timeout, server error, unknown repository).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.artifacts import dumps, write_atomic
from generator.errors import AtlasError
from generator.suite import Suite

EXIT_OK, EXIT_CHANGED, EXIT_UNCHECKED = 0, 1, 3
SHA = re.compile(r"^[0-9a-f]{40}$")


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

    @property
    def checked(self) -> bool:
        return self.current is not None


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
        row = Row(spec.name, spec.id, wanted, lock["models"].get(spec.name, {}).get("sha"))
        rows.append(row)
        if SHA.match(wanted):
            row.current, row.status, row.detail = wanted, "pinned", "commit pinned in the suite"
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
        if row.locked is None:
            row.status = "new"
        else:
            row.status = "unchanged" if row.locked == row.current else "changed"
    return rows


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
            models[r.model] = {"id": r.id, "revision": r.revision, "sha": r.current}
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


def main(suite: Suite, lock_path: Path, update: bool, endpoint: str | None, timeout: float) -> int:
    lock = read_lock(lock_path)
    rows = check(suite, lock, endpoint, timeout)
    print("\n".join(report(rows)))
    if update:
        new = updated_lock(lock, rows)
        if new != lock or not lock_path.is_file():
            write_atomic(lock_path, dumps(new))
            print(f"updated {lock_path}")
    code = exit_code(rows, update)
    if code == EXIT_UNCHECKED:
        print("some models could not be checked; their lock entries were left as they were")
    elif code == EXIT_CHANGED:
        print("revisions changed: run with --update to record them, then `make site`")
    return code
