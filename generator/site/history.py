"""The findings of each model revision, kept across builds: what the changelog page is made from.

`history.json` sits beside the artifacts (CI caches that folder). After every run, each model
that was built gets its headline numbers and claim verdicts recorded under its revision (hub
sha) or file hash. A new revision appends an entry; the same revision updates its entry in
place, so the changelog shows one row per release, not one per build.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from generator.artifacts import dumps
from generator.fsutil import write_atomic
from generator.site.findings import claims_for, headline_values, load_build

FILE = "history.json"


def read(artifacts: Path) -> dict[str, list[dict[str, Any]]]:
    p = artifacts / FILE
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a torn file only loses the changelog, never the report
    return data if isinstance(data, dict) else {}


def update(artifacts: Path, today: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Record this build's findings per model revision; returns the whole history."""
    build = load_build(artifacts)
    thresholds = build["summary"]["claims"]
    today = today or datetime.date.today().isoformat()
    history = read(artifacts)
    for m in build["models"]:
        if m.status != "ok" or not m.experiments:
            continue
        entry = {"ident": m.ident, "source": m.source, "date": today,
                 "headlines": headline_values(m),
                 "claims": {c["text"]: c["verdict"] for c in claims_for(m, thresholds)}}
        entries = history.setdefault(m.name, [])
        if entries and entries[-1]["ident"] == entry["ident"]:
            entries[-1] = {**entry, "first_seen": entries[-1].get("first_seen", today)}
        else:
            entries.append({**entry, "first_seen": today})
    write_atomic(artifacts / FILE, dumps(history))
    return history


def changes(history: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per revision change: numbers before and after, claims whose verdict changed."""
    out = []
    for model, entries in sorted(history.items()):
        for before, after in zip(entries[:-1], entries[1:], strict=True):
            labels = sorted(set(before["headlines"]) | set(after["headlines"]))
            claims = sorted(set(before["claims"]) | set(after["claims"]))
            out.append({
                "model": model, "before": before["ident"], "after": after["ident"],
                "date": after["first_seen"],
                "numbers": [{"label": k, "before": before["headlines"].get(k),
                             "after": after["headlines"].get(k)} for k in labels],
                "claims": [{"text": c, "before": before["claims"].get(c, "—"),
                            "after": after["claims"].get(c, "—")} for c in claims
                           if before["claims"].get(c) != after["claims"].get(c)],
            })
    return out
