"""Run the suite: for each model, one capture pass per input mode feeds every experiment's reducers.

A model whose artifacts are all cached is not even loaded. A model that cannot be loaded is
recorded as skipped with its reason and the others still run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generator import __version__, adapters, artifacts, experiments, history, inputs, models
from generator.errors import AtlasError
from generator.executors import Local
from generator.experiments import Context, Output
from generator.reducers import Reducer
from generator.suite import Suite, check_params

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 2  # bump when what an artifact folder holds changes: old entries rebuild


@dataclass
class Summary:
    generated: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)
    forwards: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"generated {len(self.generated)}, cached {len(self.cached)}, "
               f"skipped {len(self.skipped)} in {self.seconds:.1f}s ({self.forwards} forward passes)"]
        out += [f"  generated  {e}" for e in self.generated]
        out += [f"  rebuilt    {e}: {why}" for e, why in self.rebuilt.items()]
        out += [f"  skipped    {e}: {why}" for e, why in self.skipped.items()]
        out += [f"  retried    {r}" for r in self.retried]
        return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "transformers", "numpy", "scikit-learn", "umap-learn", "altair")
    return {"latent-atlas": __version__, **{n: md.version(n) for n in names}}


def experiment_params(suite: Suite) -> dict[str, Any]:
    """Every enabled experiment's checked Params; errors before any model work starts."""
    out = {}
    for name, mod in experiments.registry().items():
        if suite.experiment_enabled(name):
            out[name] = check_params(mod.Params, suite.experiments.get(name, {}), suite.path, name)
    unknown = set(suite.experiments) - set(experiments.registry())
    if unknown:
        from generator.errors import SuiteError

        raise SuiteError(f"{suite.path}: experiments.{sorted(unknown)[0]}", "unknown experiment",
                         f"known: {', '.join(experiments.registry())}")
    return out


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The generator's exact code: a changed experiment or chart must never reuse old artifacts."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def cache_key(suite: Suite, fp: dict[str, Any], name: str, params: Any) -> str:
    mod = experiments.registry()[name]
    modes = sorted({"text", "repeat", "singular"} & set(_modes_of(mod)))
    blob = {"generator": __version__, "code": code_digest(), "format": ARTIFACT_FORMAT,
            "model": fp, "experiment": name,
            "params": dataclasses.asdict(params), "seed": suite.seed,
            "capture": dataclasses.asdict(suite.capture),
            "inputs": {m: _inputs_key(suite, m) for m in modes}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _modes_of(mod: Any) -> tuple[str, ...]:
    return getattr(mod, "MODES", ("text", "repeat", "singular"))


def _inputs_key(suite: Suite, mode: str) -> Any:
    i = suite.inputs
    if mode == "repeat":
        return dataclasses.asdict(i.repeat)
    if mode == "singular":
        return dataclasses.asdict(i.singular)
    return {k: v for k, v in dataclasses.asdict(i).items() if k not in ("repeat", "singular")}


@dataclass(frozen=True)
class Execution:
    """How capture runs: `local` (this process) or `ray` (`workers` actors, cluster at `address`)."""

    executor: str = "local"
    workers: int = 2
    address: str | None = None
    dtype: str | None = None
    """Overrides every model's `dtype` (float32, bfloat16, float16)."""


def run(suite: Suite, out: Path, only: list[str] | None = None, device: str | None = None,
        progress: bool = True, execution: Execution = Execution()) -> Summary:
    start = time.perf_counter()
    params = experiment_params(suite)
    store = artifacts.Store(out)
    store.clean_temp()
    summary = Summary()
    specs = [m for m in suite.models if not only or m.name in only]
    if only and len(specs) != len(only):
        from generator.errors import SuiteError

        missing = sorted(set(only) - {m.name for m in suite.models})
        raise SuiteError(f"--models {missing[0]}", "no such model in the suite",
                         f"choose from: {', '.join(m.name for m in suite.models)}")
    if execution.dtype:
        specs = [dataclasses.replace(m, dtype=execution.dtype) for m in specs]
    for spec in specs:
        try:
            run_model(suite, spec, params, store, summary, device, progress, execution)
        except AtlasError as exc:
            summary.skipped[spec.name] = str(exc).replace("\n  fix:", "; fix:")
            _write_status(store, spec.name, "skipped", str(exc))
    summary.seconds = time.perf_counter() - start
    artifacts.write_atomic(out / "summary.json", artifacts.dumps(
        {"generated": summary.generated, "cached": summary.cached, "skipped": summary.skipped,
         "models": [m.name for m in specs], "suite": suite.path, "suite_sha256": suite.digest,
         "title": suite.title, "claims": dataclasses.asdict(suite.claims)}))
    history.update(out)
    return summary


def _write_status(store: Store, model: str, status: str, reason: str = "",
                  provenance: dict | None = None) -> None:
    artifacts.write_atomic(store.path(model) / "status.json", artifacts.dumps(
        {"model": model, "status": status, "reason": reason, "provenance": provenance or {}}))


Store = artifacts.Store


def run_model(suite: Suite, spec: models.ModelSpec, params: dict[str, Any], store: Store,
              summary: Summary, device: str | None, progress: bool,
              execution: Execution = Execution()) -> None:
    fp = models.fingerprint(spec)
    keys = {name: cache_key(suite, fp, name, p) for name, p in params.items()}
    todo = []
    for name, key in keys.items():
        ok, why = store.valid(f"{spec.name}/{name}", key)
        if ok:
            summary.cached.append(f"{spec.name}/{name}")
        else:
            todo.append(name)
            if why not in ("not built yet", "inputs changed"):
                summary.rebuilt[f"{spec.name}/{name}"] = why
                log.warning("rebuilding %s/%s: %s", spec.name, name, why)
    if not todo:
        return
    t0 = time.perf_counter()
    dev = pick_device(device or suite.capture.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = models.load(spec, dev)
    _write_status(store, spec.name, "ok", provenance={**loaded.provenance, "versions": versions()})
    executor = None
    if execution.executor == "ray":
        from generator.executors import RayExecutor

        executor = RayExecutor(spec, dev, execution.workers, suite.capture.shard_batches,
                               execution.address, progress=progress)
    try:
        summary.forwards += run_loaded(suite, loaded, {n: params[n] for n in todo}, keys, store,
                                       summary, progress, load_seconds=time.perf_counter() - t0,
                                       executor=executor)
    finally:
        if executor is not None:
            summary.retried += executor.retried
            executor.close()


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AtlasError("--device cuda", "no CUDA device is available", "use --device cpu or auto")
    return name


def run_loaded(suite: Suite, loaded: models.LoadedModel, params: dict[str, Any],
               keys: dict[str, str], store: Store, summary: Summary, progress: bool = True,
               load_seconds: float = 0.0, executor: Any = None) -> int:
    """Capture and build the given experiments for an already-loaded model; returns forwards."""
    model, name = loaded.model, loaded.spec.name
    adapter = adapters.for_config(model.config, name)
    device = next(model.parameters()).device
    if executor is None:
        executor = Local(model, adapter, device, suite.capture.shard_batches, progress)
    registry = experiments.registry()
    modes_needed = {m for e in params for m in _modes_of(registry[e])}
    max_len = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    token_inputs = {m: inputs.build_inputs(m, loaded.tokenizer, suite.inputs, suite.seed, max_len,
                                           vocab) for m in sorted(modes_needed)}
    ctx = Context(model_name=name, n_blocks=adapter.n_blocks(model),
                  d_model=int(model.config.hidden_size), seed=suite.seed,
                  seq_len={m: t.seq_len for m, t in token_inputs.items()},
                  n_samples={m: t.n_samples for m, t in token_inputs.items()},
                  tokenizer=loaded.tokenizer, model=model, adapter=adapter,
                  capture=suite.capture, provenance=loaded.provenance,
                  input_labels={m: t.labels for m, t in token_inputs.items()},
                  suite_digest=suite.digest,
                  valid_tokens={m: int(t.mask.sum()) for m, t in token_inputs.items()})
    wanted: dict[str, dict[str, dict[str, Reducer]]] = {}
    for e, p in params.items():
        reason = registry[e].skip_reason(ctx, p)
        if reason:
            summary.skipped[f"{name}/{e}"] = reason
            _put(store, name, e, keys[e], Output(notes=[reason]), ctx, p, token_inputs, 0.0,
                 status="skipped")
            continue
        wanted[e] = registry[e].needs(ctx, p)
    forwards = 0
    timings: dict[str, float] = {}
    for mode in sorted({m for need in wanted.values() for m in need}):
        sinks = [r for need in wanted.values() for r in need.get(mode, {}).values()]
        t0 = time.perf_counter()
        forwards += executor.capture(token_inputs[mode], sinks, f"{name} {mode}")
        timings[mode] = time.perf_counter() - t0
    for e, need in wanted.items():
        t0 = time.perf_counter()
        try:
            out = registry[e].build(ctx, params[e], need)
            seconds = time.perf_counter() - t0 + sum(timings.get(m, 0) for m in need) + load_seconds
            _put(store, name, e, keys[e], out, ctx, params[e], token_inputs, seconds)
        except AtlasError:
            raise
        except Exception as exc:  # a bug in one experiment must not cost the rest of the report
            log.error("%s/%s failed; the other experiments go on", name, e, exc_info=True)
            summary.skipped[f"{name}/{e}"] = (f"failed with {type(exc).__name__}: {exc}"[:500]
                                              + " (a bug: please report it with the log above)")
            continue
        summary.generated.append(f"{name}/{e}")
    return forwards


def _put(store: Store, model: str, exp: str, key: str, out: Output, ctx: Context, params: Any,
         token_inputs: dict[str, inputs.TokenInputs], seconds: float, status: str = "ok") -> None:
    mod = experiments.registry()[exp]
    prov = {"model": ctx.provenance, "experiment": exp, "params": dataclasses.asdict(params),
            "seed": ctx.seed, "suite_sha256": ctx.suite_digest,
            "inputs": {m: t.describe() for m, t in token_inputs.items() if m in _modes_of(mod)},
            "versions": versions(), "status": status, "cache_key": key}
    ident = ctx.provenance.get("revision") or (ctx.provenance.get("sha256") or "")[:12]
    line = (f"{model} · {ident} · seed {ctx.seed} · latent-atlas {__version__} · "
            f"transformers {prov['versions']['transformers']}")
    files: dict[str, str] = {}
    for cname, chart in out.charts.items():
        files.update(artifacts.chart_files(cname, chart, line, {"provenance": prov}))
    files["metrics.json"] = artifacts.dumps(
        {k: {"value": v, "meaning": m} for k, (v, m) in out.metrics.items()})
    for tname, rows in out.tables.items():
        files[f"{tname}.csv"] = artifacts.table_csv(rows)
    files["provenance.json"] = artifacts.dumps({**prov, "notes": out.notes,
                                                "title": mod.TITLE, "doc": (mod.__doc__ or "").strip(),
                                                "charts": list(out.charts),
                                                "tables": list(out.tables)})
    files["run.json"] = artifacts.dumps({"date": datetime.datetime.now(datetime.timezone.utc)
                                         .isoformat(timespec="seconds"), "wall_seconds": seconds})
    store.put(f"{model}/{exp}", key, files)
