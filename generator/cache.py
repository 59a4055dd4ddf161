"""Compute keys: a stored result is reused exactly when everything it was computed from is unchanged.

An experiment's key covers the suite values it reads (its parameters, the seed, the capture
options, the input modes it uses), the model fingerprint, and the code on its compute path:
the capture machinery, and the generator modules its own module imports, followed import by
import (so a change to the covariance reducer reruns what uses it, and nothing else). Chart,
template, site and bench code is not on that path: `charts` functions and docstrings are left
out of every digest, and `generator.charts` is never followed. Changing
them re-renders pages from stored tables without a forward pass.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from generator import __version__
from generator.experiment import Experiment

ARTIFACT_FORMAT = 3
"""Bump when what an artifact entry holds changes: old entries rebuild."""

ROOT = Path(__file__).resolve().parent
CORE = ("capture", "inputs.py", "models.py", "architectures", "executors.py", "experiment.py")
"""Code every experiment's numbers pass through, whatever it imports."""
NOT_COMPUTE = ("generator.charts", "generator.site", "generator.bench", "generator.cli")
"""Modules an experiment may import that never change a number."""
CHART_FUNCTIONS = ("charts",)
"""Functions that only draw, left out of every digest (an experiment's, and shared helpers')."""


def _file_of(module: str) -> Path | None:
    """The source file of a generator module, or None for anything else."""
    if not module.startswith("generator") or module.startswith(NOT_COMPUTE):
        return None
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(path: Path) -> set[str]:
    """Generator modules imported anywhere in a file (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m.startswith("generator")}


def closure(start: Path) -> list[Path]:
    """`start` and every generator file it reaches through imports, sorted."""
    seen, todo = {start}, [start]
    while todo:
        for module in _imports(todo.pop()):
            try:
                path = _file_of(module)
            except (ImportError, ValueError):
                path = None  # `from generator.x import name`: the name is not a module
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return sorted(seen)


def compute_source(path: Path) -> str:
    """A module's code without what only draws or explains: its charts function and docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = [n for n in tree.body
            if not (isinstance(n, ast.FunctionDef) and n.name in CHART_FUNCTIONS)
            and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                     and isinstance(n.value.value, str))]
    return ast.dump(ast.Module(body=body, type_ignores=[]))


@cache
def code_digest(module: str) -> str:
    """Digest of the code on experiment `module`'s compute path."""
    own = _file_of(module)
    assert own is not None, module
    files = set(closure(own))
    for core in CORE:
        p = ROOT / core
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            files |= set(closure(f))
    h = hashlib.sha256()
    for f in sorted(files):
        text = compute_source(f)
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def inputs_key(suite: Any, mode: str) -> Any:
    """The suite values that decide the tokens of one input mode."""
    i = suite.inputs
    if mode == "repeat":
        return dataclasses.asdict(i.repeat)
    if mode == "singular":
        return dataclasses.asdict(i.singular)
    return {k: v for k, v in dataclasses.asdict(i).items() if k not in ("repeat", "singular")}


def compute_key(suite: Any, fingerprint: dict[str, Any], exp: Experiment, params: Any) -> str:
    """The key a stored result of `exp` on this model must carry to be reused."""
    capture = {k: v for k, v in dataclasses.asdict(suite.capture).items()
               if k != "max_chart_points"}  # drawing only
    blob = {"generator": __version__, "format": ARTIFACT_FORMAT, "code": code_digest(exp.module),
            "model": fingerprint, "experiment": exp.name, "params": dataclasses.asdict(params),
            "seed": suite.seed, "capture": capture,
            "inputs": {m: inputs_key(suite, m) for m in sorted(exp.modes)}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
