"""Join artifact trees built by separate jobs (one per model) into the tree one run would write.

CI builds each model in its own job and uploads its artifact tree; `actions/upload-artifact`'s
`merge-multiple` would let the last writer win for the shared files (manifest, summary,
history), so those are joined here instead, deterministically:

- Trees are read in the order given (the published tree first, then the fresh per-model runs).
  A model's folder and manifest entries come from the last tree whose run built it (`status`
  ok); failing that, from the last tree that has it at all. So a model whose job failed this
  time keeps its last published build, and a fresh build replaces an old one.
- Only entries whose files match their recorded hashes are carried over; a torn or edited one is
  left out and reported (the next run rebuilds it).
- `summary.json`: the per-model lists (generated, cached, skipped, not applicable) are joined in
  model order (the suite's, with `--suite`); the rest (title, seed, claims...) come from the last
  tree, which ran the current suite. A suite model that no tree has is recorded as skipped.
- `history.json`: per model, the entries of each tree in order; an entry for the revision the
  history ends with replaces it (keeping when it was first seen), a new revision is appended, and
  only the last `keep` revisions are kept, so the changelog lasts without growing without bound.

A merge of two single-model runs is byte-identical to one run of both (run.json aside).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.artifacts import Store, dumps, read_json
from generator.errors import AtlasError
from generator.fsutil import exclusive, swap_in, temp_dir_for, write_atomic

log = logging.getLogger(__name__)

PER_MODEL = ("generated", "cached", "skipped", "not_applicable")
"""summary.json fields that list entries (`model/experiment`) or models: joined, not overwritten."""
KEEP_REVISIONS = 50
"""History entries kept per model (one per revision): small JSON, far below Pages' 1 GB."""


@dataclass
class Tree:
    """One artifact tree as read from disk."""

    root: Path
    summary: dict[str, Any]
    store: Store
    history: dict[str, list[dict[str, Any]]]

    def status(self, model: str) -> str | None:
        st = read_json(self.root / model / "status.json")
        return st.get("status") if isinstance(st, dict) else None


@dataclass
class Report:
    """What a merge took from where, printed by the CLI."""

    sources: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"  {m:<20} from {src}" for m, src in self.sources.items()]
        out += [f"  dropped    {d}" for d in self.dropped]
        out += [f"  missing    {m}: no tree has it" for m in self.missing]
        return out


def read_tree(root: Path) -> Tree:
    summary = read_json(root / "summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), list):
        raise AtlasError(str(root), "not an artifact tree (no readable summary.json)",
                         "pass folders written by `python -m generator run` (or `merge`)")
    history = read_json(root / "history.json", {})
    return Tree(root, summary, Store(root), history if isinstance(history, dict) else {})


def _model_order(trees: list[Tree], models: list[str] | None) -> list[str]:
    if models is not None:
        return list(models)
    order: list[str] = []
    for t in trees:
        order += [m for m in t.summary["models"] if m not in order]
    return order


def _winner(trees: list[Tree], model: str) -> Tree | None:
    having = [t for t in trees if model in t.summary["models"] and (t.root / model).is_dir()]
    ok = [t for t in having if t.status(model) == "ok"]
    return (ok or having or [None])[-1]


def _per_model(value: Any, model: str) -> Any:
    """The part of a summary list/dict that belongs to `model` (its name or `model/...`)."""
    def mine(k: str) -> bool:
        return k == model or k.startswith(model + "/")
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if mine(k)}
    return [k for k in value if mine(k)]


def join_history(trees: list[Tree], keep: int = KEEP_REVISIONS) -> dict[str, list[dict[str, Any]]]:
    """Every tree's history, in tree order, one entry per revision run (see the module doc)."""
    joined: dict[str, list[dict[str, Any]]] = {}
    for t in trees:
        for model, entries in sorted(t.history.items()):
            if not isinstance(entries, list):
                continue
            out = joined.setdefault(model, [])
            for e in entries:
                if not isinstance(e, dict) or "ident" not in e:
                    continue
                if out and out[-1]["ident"] == e["ident"]:
                    first = out[-1].get("first_seen", e.get("first_seen"))
                    out[-1] = {**e, "first_seen": first}
                else:
                    out.append(e)
    return {m: entries[-keep:] for m, entries in joined.items()}


def merge(sources: list[Path], out: Path, models: list[str] | None = None,
          keep: int = KEEP_REVISIONS) -> Report:
    """Write the joined tree of `sources` to `out` (replaced whole, atomically)."""
    out = Path(out).resolve()
    if not sources:
        raise AtlasError("merge", "no artifact trees given", "pass one folder per run")
    for s in sources:
        if Path(s).resolve() == out:
            raise AtlasError(str(out), "is also one of the trees to merge",
                             "write the merge to a new folder (--out)")
    trees = [read_tree(Path(s)) for s in sources]
    with exclusive(out, "merge or run"):  # a run writing there now would lose its entries
        return _merge(trees, out, models, keep)


def _merge(trees: list[Tree], out: Path, models: list[str] | None, keep: int) -> Report:
    order = _model_order(trees, models)
    last = trees[-1].summary
    summary: dict[str, Any] = {k: v for k, v in last.items() if k not in PER_MODEL}
    summary.update({k: ([] if isinstance(last.get(k, []), list) else {}) for k in PER_MODEL})
    summary["models"] = order
    manifest: dict[str, Any] = {}
    report = Report()
    tmp = temp_dir_for(out)
    try:
        for model in order:
            t = _winner(trees, model)
            if t is None:
                why = (f"{model}: not built: no artifact tree has it (its capture job failed or did "
                       "not run)\n  fix: see that job's log; the next run plans it again")
                report.missing.append(model)
                summary["skipped"][model] = why.replace("\n  fix:", "; fix:")
                write_atomic(tmp / model / "status.json", dumps(
                    {"model": model, "status": "skipped", "reason": why, "provenance": {}}))
                continue
            report.sources[model] = str(t.root)
            (tmp / model).mkdir(parents=True)
            shutil.copy2(t.root / model / "status.json", tmp / model / "status.json")
            for entry, meta in sorted(t.store.manifest.items()):
                if not entry.startswith(model + "/"):
                    continue
                why = t.store.verify(entry)
                if why is not None:
                    report.dropped.append(f"{entry} from {t.root}: {why}")
                    continue
                shutil.copytree(t.root / entry, tmp / entry)
                manifest[entry] = meta
            for k in PER_MODEL:
                part = _per_model(t.summary.get(k) or type(summary[k])(), model)
                if isinstance(part, dict):
                    summary[k].update(part)
                else:
                    summary[k] += part
        if "outcome" in last:
            summary["outcome"] = _outcome(summary)
        write_atomic(tmp / "manifest.json", dumps(manifest))
        write_atomic(tmp / "summary.json", dumps(summary))
        write_atomic(tmp / "history.json", dumps(join_history(trees, keep)))
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _outcome(summary: dict[str, Any]) -> str:
    """The joined run's outcome, in the words a single run would use."""
    from generator.pipeline import Summary

    s = Summary(generated=summary["generated"], cached=summary["cached"],
                skipped=summary["skipped"], not_applicable=summary["not_applicable"],
                models=summary["models"])
    return s.outcome()


def main(sources: list[Path], out: Path, suite_path: str | None, keep: int) -> int:
    models = None
    if suite_path:
        from generator.suite import load_suite

        models = [m.name for m in load_suite(suite_path).models]
    report = merge(sources, out, models, keep)
    print(f"merged {len(sources)} tree(s) into {out}")
    print("\n".join(report.lines()))
    return 0

