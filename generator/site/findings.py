"""What a build found: the artifacts read back as models, headline numbers and checked claims.

Shared by the renderer (pages) and the history (changelog), so a number means the same thing on
every page. Only entries whose files match the manifest's hashes are read: an edited or torn
result is reported, never published. Headlines and claims come from the experiments'
declarations. Reads only artifact files: never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.artifacts import Store, read_json
from generator.errors import AtlasError
from generator.experiment import Result, registry


def fmt(v: Any) -> str:
    """A number for reading: thousands separated, four significant digits otherwise."""
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer()
                              and abs(v) < 1e15):
        return f"{int(v):,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        if 1e3 <= abs(v) < 1e15:
            return f"{v:,.0f}"  # 18,227: never 1.823e+04
        return f"{v:,.4g}" if 1e-3 <= abs(v) or v == 0 else f"{v:.3g}"
    return str(v)


@dataclass
class Entry:
    """One experiment's stored result for one model."""

    folder: Path
    status: str
    """`ok` or `not_applicable`."""
    result: Result
    provenance: dict[str, Any]
    run: dict[str, Any]


@dataclass
class Model:
    name: str
    status: str
    reason: str
    source: str
    ident: str
    experiments: dict[str, Entry] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    """Entries present but not trusted (hash mismatch), with why."""


def _entry(folder: Path) -> Entry:
    meta = read_json(folder / "result.json", {})
    tables = {t: read_json(folder / f"{t}.table.json", []) for t in meta.get("tables", [])}
    result = Result(metrics=meta.get("metrics", {}), tables=tables, facts=meta.get("facts", {}),
                    notes=meta.get("notes", []))
    return Entry(folder, meta.get("status", "ok"), result,
                 read_json(folder / "provenance.json", {}), read_json(folder / "run.json", {}))


def load_build(artifacts: Path) -> dict[str, Any]:
    """Summary plus, per model, its status and every experiment entry the manifest vouches for."""
    summary = read_json(artifacts / "summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), list):
        raise AtlasError(str(artifacts), "no readable summary.json: the suite has not been run here",
                         "run `python -m generator run` (or `make site`) first")
    store = Store(artifacts)
    models = []
    for name in summary["models"]:
        status = read_json(store.path(name) / "status.json", None)
        if not isinstance(status, dict):
            status = {"status": "skipped", "reason": "no status recorded (rerun the suite)"}
        prov = status.get("provenance", {})
        m = Model(name, status.get("status", "skipped"), status.get("reason", ""),
                  prov.get("id") or prov.get("source", "—"),
                  prov.get("revision") or prov.get("sha256") or "—")
        for exp in registry():
            entry = f"{name}/{exp}"
            why = store.verify(entry)
            if why is None:
                m.experiments[exp] = _entry(store.path(entry))
            elif why != "not built yet":
                m.rejected[exp] = why
        models.append(m)
    return {"summary": summary, "models": models}


def headline_values(model: Model) -> dict[str, float | None]:
    """Label -> value of each headline number this model has (missing ones are left out)."""
    out = {}
    for name, exp in registry().items():
        e = model.experiments.get(name)
        for h in exp.headlines:
            if e and e.status == "ok" and h.metric in e.result.metrics:
                out[h.label] = e.result.metrics[h.metric]
    return out


def headlines() -> list[dict[str, str]]:
    """Every headline any experiment declares, in page order."""
    return [{"page": name, "label": h.label} for name, exp in registry().items()
            for h in exp.headlines]


def claims_for(model: Model, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """Each paper claim for this model, with the measured number and its verdict.

    A claim of an experiment that does not apply to the model reads "n/a" with the reason; a
    claim whose number could not be measured reads "not measured"; otherwise the number is
    compared with the suite's threshold.
    """
    out = []
    for name, exp in registry().items():
        e = model.experiments.get(name)
        if e is None:
            continue
        for c in exp.claims:
            t = thresholds.get(c.threshold, c.default)
            row = {"model": model.name, "page": name, "exp": name, "text": c.text.format(t=t),
                   "threshold": fmt(t), "value": "—", "why": "", "where": ""}
            if e.status != "ok":
                out.append({**row, "verdict": "n/a", "css": "unknown",
                            "why": " ".join(e.result.notes)})
                continue
            value = e.result.metrics.get(c.metric)
            if value is None or not math.isfinite(value):
                out.append({**row, "verdict": "not measured", "css": "unknown",
                            "why": "the number could not be computed on this run's data"})
                continue
            holds = value >= t
            out.append({**row, "value": fmt(value), "verdict": "holds" if holds else "does not hold",
                        "css": "holds" if holds else "fails",
                        "where": c.where(e.result, t) if c.where else ""})
    return out
