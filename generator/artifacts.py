"""Artifacts: the contract between the generator and the site. Written atomically, verified on read.

Per model and experiment, a folder holds `result.json` (metrics, facts for the charts, notes,
status), one `<table>.table.json` per table (rows), `provenance.json` (deterministic: what it was
made from) and `run.json` (when and how long: the only file that differs between two identical
runs). Charts are not stored here: the site draws them from the tables, so restyling a chart
needs no recompute. `manifest.json` at the top lists complete entries with their compute key
and the sha256 of every file; anything missing or different is reported and rebuilt, and never
rendered.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from generator.errors import AtlasError
from generator.fsutil import clean_temp, swap_in, temp_dir_for, write_atomic, write_file

log = logging.getLogger(__name__)

VOLATILE = {"run.json"}


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, NaN/inf as null, floats rounded to 6 significant digits."""
    return json.dumps(_clean(obj), sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        return _clean(obj.item())
    return obj


def table_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _entries(raw: Any) -> dict[str, Any]:
    """The well-formed entries of a manifest; anything else is dropped (and so rebuilt)."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, dict) and isinstance(v.get("key"), str)
            and isinstance(v.get("files"), dict)}


class Store:
    """The artifact folder and its manifest of complete, hash-verified entries."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.manifest: dict[str, Any] = {}
        if self.manifest_path.is_file():
            try:
                self.manifest = _entries(json.loads(self.manifest_path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("manifest.json is corrupt; every entry will be rebuilt")

    def path(self, entry: str) -> Path:
        """The folder of `entry`, refused unless it lies strictly inside the store's root."""
        root = self.root.resolve()
        final = (root / entry).resolve()
        if final == root or root not in final.parents:
            raise AtlasError(entry, f"resolves to {final}, outside the artifact folder {root}",
                             "use plain model names (letters, digits, '.', '_', '-')")
        return final

    def verify(self, entry: str) -> str | None:
        """Why `entry` cannot be trusted (missing, or a file differs from its hash), or None."""
        meta = self.manifest.get(entry)
        if meta is None:
            return "not built yet"
        folder = self.path(entry)
        for name, digest in meta["files"].items():
            p = folder / name
            if not p.is_file():
                return f"{entry}/{name} is missing"
            if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
                return f"{entry}/{name} does not match its recorded hash (corrupt or edited)"
        return None

    def valid(self, entry: str, key: str) -> tuple[bool, str]:
        """(usable?, why not): the entry exists, has this key, and every file hashes right."""
        meta = self.manifest.get(entry)
        if meta is not None and meta["key"] != key:
            return False, "inputs changed"
        why = self.verify(entry)
        return (False, why) if why else (True, "cached")

    def put(self, entry: str, key: str, files: dict[str, str]) -> None:
        """Write a whole entry into a temp folder, swap it in, then record it in the manifest."""
        final = self.path(entry)
        tmp = temp_dir_for(final)
        try:
            for name, text in files.items():
                write_file(tmp / name, text.encode("utf-8"))
            swap_in(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.manifest[entry] = {"key": key, "files": {n: sha256_text(t) for n, t in files.items()
                                                      if n not in VOLATILE}}
        write_atomic(self.manifest_path, dumps(self.manifest))

    def clean_temp(self) -> None:
        """Remove half-written files and folders a killed run left behind (never trusted)."""
        clean_temp(self.root)


def read_json(path: Path, default: Any = None) -> Any:
    """A bookkeeping file, or `default` when it is missing or torn (it is then rewritten)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return default
