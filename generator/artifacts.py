"""Artifacts: the contract between the generator and the site. Written atomically, verified on read.

Per model and experiment, a folder holds `*.vl.json` (Vega-Lite, data moved to `*.data.json`),
`*.svg` (static render by vl-convert), `metrics.json`, `*.csv` tables, `provenance.json`
(deterministic: what it was made from) and `run.json` (when and how long: the only file that
differs between two identical runs). `manifest.json` at the top lists complete entries with the
sha256 of every file; anything missing or different is reported and rebuilt, never rendered.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from generator.errors import AtlasError

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


def write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def chart_files(name: str, chart: Any, provenance_line: str, usermeta: dict) -> dict[str, str]:
    """Spec with its data split out to `<name>.data.json`, plus the static SVG."""
    import vl_convert

    spec = chart.to_dict()
    datasets = spec.pop("datasets", {})
    title = spec.get("title")
    if isinstance(title, dict):
        title["subtitle"] = [*title.get("subtitle", []), provenance_line]
    spec["usermeta"] = usermeta
    rows = _clean(next(iter(datasets.values()))) if datasets else []
    url = f"{name}.data.json"
    spec = _relink(spec, set(datasets), {"url": url})
    inline = _relink(json.loads(json.dumps(spec)), {url}, {"values": rows})
    svg = stable_ids(vl_convert.vegalite_to_svg(inline, allowed_base_urls=[]), name)
    return {f"{name}.vl.json": dumps(spec), f"{name}.data.json": dumps(rows), f"{name}.svg": svg}


def stable_ids(svg: str, prefix: str) -> str:
    """vl-convert numbers gradients and clips with a process-wide counter: renumber per chart."""
    seen: dict[str, str] = {}

    def rename(m: re.Match) -> str:
        return seen.setdefault(m.group(0), f"{prefix}-{m.group(1)}{len(seen)}")

    return re.sub(r"\b(gradient|clip|pattern)_?(\d+)\b", rename, svg)


def _relink(node: Any, names: set[str], data: dict) -> Any:
    if isinstance(node, dict):
        if node.keys() == {"name"} and node["name"] in names or (
                node.keys() == {"url"} and node["url"] in names):
            return dict(data)
        return {k: _relink(v, names, data) for k, v in node.items()}
    if isinstance(node, list):
        return [_relink(v, names, data) for v in node]
    return node


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


class Store:
    """The artifact folder and its manifest of complete, hash-verified entries."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.manifest: dict[str, Any] = {}
        if self.manifest_path.is_file():
            try:
                self.manifest = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError:
                log.warning("manifest.json is corrupt; every entry will be rebuilt")

    def path(self, entry: str) -> Path:
        """The folder of `entry`, refused unless it lies strictly inside the store's root."""
        root = self.root.resolve()
        final = (root / entry).resolve()
        if final == root or root not in final.parents:
            raise AtlasError(entry, f"resolves to {final}, outside the artifact folder {root}",
                             "use plain model names (letters, digits, '.', '_', '-')")
        return final

    def valid(self, entry: str, key: str) -> tuple[bool, str]:
        """(usable?, why not): the entry exists, has this key, and every file hashes right."""
        meta = self.manifest.get(entry)
        if meta is None:
            return False, "not built yet"
        if meta.get("key") != key:
            return False, "inputs changed"
        folder = self.path(entry)
        for name, digest in meta["files"].items():
            p = folder / name
            if not p.is_file():
                return False, f"{entry}/{name} is missing"
            if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
                return False, f"{entry}/{name} does not match its recorded hash (corrupt or edited)"
        return True, "cached"

    def put(self, entry: str, key: str, files: dict[str, str]) -> None:
        """Write a whole entry into a temp folder, swap it in, then record it in the manifest."""
        final = self.path(entry)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        self.manifest[entry] = {"key": key, "files": {n: sha256_text(t) for n, t in files.items()
                                                      if n not in VOLATILE}}
        write_atomic(self.manifest_path, dumps(self.manifest))

    def drop(self, entry: str) -> None:
        if self.manifest.pop(entry, None) is not None:
            write_atomic(self.manifest_path, dumps(self.manifest))

    def clean_temp(self) -> None:
        """Remove half-written folders a killed run left behind (never trusted, never rendered)."""
        if self.root.is_dir():
            for p in self.root.glob("**/.*.tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
            for p in self.root.glob("**/.*.old-*"):
                shutil.rmtree(p, ignore_errors=True)
