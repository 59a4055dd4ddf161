"""Run the suite: for each model, one capture pass per input mode feeds every experiment's reducers.

suite -> models -> inputs -> capture -> reducers -> experiments' compute -> artifact store. A
model whose results are all cached is not even loaded. A model that cannot be loaded is
recorded as skipped with its reason and the others still run; an experiment that does not
apply to a model is recorded as not applicable, which is not a failure.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import __version__, artifacts, cache, inputs, memory, models
from generator.errors import AtlasError, ExecutorError, SuiteError
from generator.experiment import Context, Experiment, Result, registry
from generator.fsutil import DiskFullError, exclusive, scratch_dir
from generator.suite import Suite, check_params

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did: printed at the end, written to summary.json, read by CI (`--strict`)."""

    generated: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)
    forwards: int = 0
    seconds: float = 0.0

    models: list[str] = field(default_factory=list)
    """The models this run was asked to build."""
    failed: list[str] = field(default_factory=list)
    """Models whose capture machinery failed (Ray unreachable, a shard failing every try): unlike
    a model that is not available, this fails the run."""
    notes: list[str] = field(default_factory=list)
    """Things to know that change no number (e.g. a hub model not pinned by the lock)."""

    @property
    def built_nothing(self) -> bool:
        """Every model asked for was skipped: there is nothing to publish."""
        done = {e.split("/")[0] for e in self.generated + self.cached + list(self.not_applicable)}
        return bool(self.models) and not done

    def exit_code(self, strict: bool = False) -> int:
        """The exit status CI relies on.

        0: everything built, or without --strict at least one model built; 1: something was
        skipped under --strict; 3: no model could be built at all (nothing to publish).
        """
        if self.built_nothing:
            return 3
        return 1 if self.failed or (strict and self.skipped) else 0

    def outcome(self) -> str:
        if self.built_nothing:
            return "failed: no model could be built (exit status 3)"
        if self.failed:
            return f"failed: the capture of {', '.join(self.failed)} failed (exit status 1)"
        if self.skipped:
            return ("partial: some parts were skipped (exit status 0; 1 with --strict)")
        return "complete (exit status 0)"

    def lines(self) -> list[str]:
        out = [f"generated {len(self.generated)}, cached {len(self.cached)}, "
               f"not applicable {len(self.not_applicable)}, skipped {len(self.skipped)} "
               f"in {self.seconds:.1f}s ({self.forwards} forward passes)"]
        out += [f"  generated  {e}" for e in self.generated]
        out += [f"  rebuilt    {e}: {why}" for e, why in self.rebuilt.items()]
        out += [f"  n/a        {e}: {why}" for e, why in self.not_applicable.items()]
        out += [f"  skipped    {e}: {why}" for e, why in self.skipped.items()]
        out += [f"  retried    {r}" for r in self.retried]
        out += [f"  failed     {m}" for m in self.failed]
        out += [f"  note       {n}" for n in self.notes]
        out.append(f"outcome: {self.outcome()}")
        return out


@dataclass(frozen=True)
class Execution:
    """How capture runs: `local` (this process) or `ray` (`workers` actors, cluster at `address`)."""

    executor: str = "local"
    workers: int = 2
    address: str | None = None
    dtype: str | None = None
    """Overrides every model's `dtype` (float32, bfloat16, float16)."""
    cpus_per_worker: int | None = None
    """CPUs each Ray actor reserves (and its torch threads); default: a local cluster's cores
    split among the workers, 1 on an existing cluster."""
    gpus_per_worker: float = 0.0
    """GPUs each Ray actor reserves; above 0 the actors put the model on CUDA."""


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "transformers", "numpy", "scikit-learn", "umap-learn", "altair")
    return {"latent-atlas": __version__, **{n: md.version(n) for n in names}}


def experiment_params(suite: Suite) -> dict[str, Any]:
    """Every enabled experiment's checked Params; errors before any model work starts."""
    unknown = set(suite.experiments) - set(registry())
    if unknown:
        raise SuiteError(f"{suite.path}: experiments.{sorted(unknown)[0]}", "unknown experiment",
                         f"known: {', '.join(registry())}")
    return {name: check_params(exp.params, suite.experiments.get(name, {}), suite.path, name)
            for name, exp in registry().items() if suite.experiment_enabled(name)}


def run(suite: Suite, out: Path, only: list[str] | None = None, device: str | None = None,
        progress: bool = True, execution: Execution = Execution(),
        lock: Path | None = None) -> Summary:
    """Build the suite's models into `out`; hub models at the commit `lock` records.

    `lock` defaults to `models.lock.json` beside the suite (see `releases.pin`).
    """
    from generator import releases

    params = experiment_params(suite)
    chosen = [m for m in suite.models if not only or m.name in only]
    pinned, notes = releases.pin(chosen, releases.lock_path_for(suite, lock))
    by_name = {m.name: m for m in pinned}
    suite = dataclasses.replace(suite, models=[by_name.get(m.name, m) for m in suite.models])
    with exclusive(Path(out), "run"):
        summary = _run_locked(suite, Path(out), params, only, device, progress, execution)
    summary.notes[:0] = notes
    return summary


def _run_locked(suite: Suite, out: Path, params: dict[str, Any], only: list[str] | None,
                device: str | None, progress: bool, execution: Execution) -> Summary:
    start = time.perf_counter()
    store = artifacts.Store(out)
    store.clean_temp()
    summary = Summary()
    specs = [m for m in suite.models if not only or m.name in only]
    if only and len(specs) != len(set(only)):
        missing = sorted(set(only) - {m.name for m in suite.models})
        raise SuiteError(f"--models {missing[0]}", "no such model in the suite",
                         f"choose from: {', '.join(m.name for m in suite.models)}")
    if not specs:
        raise SuiteError(suite.path, "names no model: there is nothing to run",
                         "add a [[models]] table (see suite.toml)")
    if execution.dtype:
        specs = [dataclasses.replace(m, dtype=execution.dtype) for m in specs]
    summary.models = [m.name for m in specs]
    for spec in specs:
        try:
            try:
                run_model(suite, spec, params, store, summary, device, progress, execution)
            except (MemoryError, RuntimeError) as exc:
                if not memory.is_out_of_memory(exc):
                    raise
                raise memory.out_of_memory(spec.name, "its run", exc) from exc
        except DiskFullError:
            raise  # every later write would fail too
        except AtlasError as exc:
            if isinstance(exc, ExecutorError):
                summary.failed.append(spec.name)
            summary.skipped[spec.name] = str(exc).replace("\n  fix:", "; fix:")
            _write_status(store, spec.name, "skipped", str(exc))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one model's unexpected failure must not cost the others
            log.error("%s failed; the other models go on", spec.name, exc_info=True)
            why = (f"{spec.name}: failed with {type(exc).__name__}: {exc}"[:500]
                   + "\n  fix: see the log above; if the suite entry looks right, please report it")
            summary.skipped[spec.name] = why.replace("\n  fix:", "; fix:")
            _write_status(store, spec.name, "skipped", why)
    summary.seconds = time.perf_counter() - start
    artifacts.write_atomic(out / "summary.json", artifacts.dumps(
        {"generated": summary.generated, "cached": summary.cached, "skipped": summary.skipped,
         "not_applicable": summary.not_applicable, "models": [m.name for m in specs],
         "outcome": summary.outcome(), "suite": suite.path, "suite_sha256": suite.digest,
         "title": suite.title,
         "seed": suite.seed, "max_chart_points": suite.capture.max_chart_points,
         "claims": suite.claim_thresholds()}))
    from generator.site import history

    history.update(out)
    return summary


def _write_status(store: artifacts.Store, model: str, status: str, reason: str = "",
                  provenance: dict | None = None) -> None:
    artifacts.write_atomic(store.path(model) / "status.json", artifacts.dumps(
        {"model": model, "status": status, "reason": reason, "provenance": provenance or {}}))


def run_model(suite: Suite, spec: models.ModelSpec, params: dict[str, Any], store: artifacts.Store,
              summary: Summary, device: str | None, progress: bool,
              execution: Execution = Execution()) -> None:
    fp = models.fingerprint(spec)
    keys = {name: cache.compute_key(suite, fp, registry()[name], p)
            for name, p in params.items()}
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
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    executor = None
    if execution.executor == "ray":  # the actors load the weights; the driver keeps the config
        from generator.executors import RayExecutor, driver_model

        executor = RayExecutor(spec, device or suite.capture.device, execution.workers,
                               suite.capture.shard_batches, execution.address, progress=progress,
                               cpus_per_worker=execution.cpus_per_worker,
                               gpus_per_worker=execution.gpus_per_worker, fp=fp)
        try:
            loaded = driver_model(spec, fp, executor)
        except BaseException:
            executor.close()
            raise
    else:
        loaded = models.load(spec, pick_device(device or suite.capture.device), fp)
    loaded.provenance.update(model_facts(loaded))
    _write_status(store, spec.name, "ok", provenance={**loaded.provenance, "versions": versions()})
    try:
        summary.forwards += run_loaded(suite, loaded, {n: params[n] for n in todo}, keys, store,
                                       summary, progress, load_seconds=time.perf_counter() - t0,
                                       executor=executor)
    finally:
        if executor is not None:
            summary.retried += executor.retried
            executor.close()


def model_facts(loaded: models.LoadedModel) -> dict[str, Any]:
    """Family, depth, width, size and dtype: what the Compare page lines models up by."""
    from generator import architectures

    model = loaded.model
    arch = architectures.for_config(model.config, loaded.spec.name)
    return {"family": arch.name, "model_type": str(model.config.model_type),
            "n_blocks": int(arch.n_blocks(model)), "d_model": int(model.config.hidden_size),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "dtype": loaded.spec.dtype}


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AtlasError("--device cuda", "no CUDA device is available", "use --device cpu or auto")
    return name


def context(suite: Suite, loaded: models.LoadedModel,
            token_inputs: dict[str, inputs.TokenInputs], device: Any = "cpu") -> Context:
    """What the experiments may know; `device`: where capture runs (Ray: the workers' device)."""
    from generator import architectures
    from generator.reducers.covariance import products_dtype

    model = loaded.model
    arch = architectures.for_config(model.config, loaded.spec.name)
    return Context(model_name=loaded.spec.name, n_blocks=arch.n_blocks(model),
                   d_model=int(model.config.hidden_size), seed=suite.seed,
                   seq_len={m: t.seq_len for m, t in token_inputs.items()},
                   n_samples={m: t.n_samples for m, t in token_inputs.items()},
                   tokenizer=loaded.tokenizer, model=model, architecture=arch,
                   capture=suite.capture,
                   input_labels={m: t.labels for m, t in token_inputs.items()},
                   valid_tokens={m: int(t.mask.sum()) for m, t in token_inputs.items()},
                   absent_points=arch.absent(model.config),
                   cov_matmul=products_dtype(suite.capture.cov_matmul, device))


def _absent_point(ctx: Context, exp: str, params: Any) -> str | None:
    """Not applicable: the experiment reads a capture point this model does not have."""
    point = getattr(params, "point", None)
    if point not in ctx.absent_points:
        return None
    return (f"{ctx.model_name} has {ctx.absent_points[point]}; {point} does not exist there "
            f"(set [experiments.{exp}] point to another capture point)")


def run_loaded(suite: Suite, loaded: models.LoadedModel, params: dict[str, Any],
               keys: dict[str, str], store: artifacts.Store, summary: Summary,
               progress: bool = True, load_seconds: float = 0.0, executor: Any = None) -> int:
    """Capture and compute the given experiments for an already-loaded model; returns forwards."""
    from generator.executors import Local
    from generator.reducers.states import share_identical

    model, name = loaded.model, loaded.spec.name
    exps = {e: registry()[e] for e in params}
    max_len = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    modes = sorted({m for e in exps.values() for m in e.modes})
    token_inputs = {m: inputs.build_inputs(m, loaded.tokenizer, suite.inputs, max_len, vocab)
                    for m in modes}
    device = executor.device if executor is not None else next(model.parameters()).device
    ctx = context(suite, loaded, token_inputs, device)
    if executor is None:
        executor = Local(model, ctx.architecture, device, suite.capture.shard_batches, progress)
    wanted: dict[str, dict[str, dict[str, Any]]] = {}
    for e, exp in exps.items():
        reason = exp.skip(ctx, params[e]) or _absent_point(ctx, e, params[e])
        if reason:
            summary.not_applicable[f"{name}/{e}"] = reason
            _put(store, loaded, exp, keys[e], Result(notes=[reason]), ctx, params[e],
                 token_inputs, 0.0, status="not_applicable")
            continue
        try:
            wanted[e] = exp.needs(ctx, params[e])
        except MemoryError as exc:
            raise memory.out_of_memory(name, f"the set-up of {e}'s statistics", exc) from exc
    sinks_of = share_identical(wanted.values())
    check_working_set(suite, loaded, sinks_of)
    # Large totals wait on disk between shards (executors.spill_totals) until computes read them.
    with scratch_dir(store.root, "spill") as spill:
        forwards = 0
        timings: dict[str, float] = {}
        for mode, sinks in sorted(sinks_of.items()):
            t0 = time.perf_counter()
            forwards += executor.capture(token_inputs[mode], sinks, f"{name} {mode}",
                                         spill=spill)
            timings[mode] = time.perf_counter() - t0
        for e, need in wanted.items():
            t0 = time.perf_counter()
            try:
                result = exps[e].compute(ctx, params[e], need)
                _check_result(exps[e], result)
                result.notes += [f"No {p} for {name}: {why}." for p, why in ctx.absent_points.items()]
            except AtlasError:
                raise
            except (MemoryError, RuntimeError) as exc:
                if not memory.is_out_of_memory(exc):
                    raise
                summary.skipped[f"{name}/{e}"] = str(memory.out_of_memory(
                    f"{name}/{e}", "its analysis", exc)).replace("\n  fix:", "; fix:")
                continue
            except Exception as exc:  # a bug in one experiment must not cost the rest of the report
                log.error("%s/%s failed; the other experiments go on", name, e, exc_info=True)
                summary.skipped[f"{name}/{e}"] = (f"failed with {type(exc).__name__}: {exc}"[:500]
                                                  + " (a bug: please report it with the log above)")
                continue
            seconds = time.perf_counter() - t0 + sum(timings.get(m, 0) for m in need) + load_seconds
            _put(store, loaded, exps[e], keys[e], result, ctx, params[e], token_inputs, seconds)
            summary.generated.append(f"{name}/{e}")
    return forwards


def check_working_set(suite: Suite, loaded: models.LoadedModel,
                      sinks: dict[str, list[Any]]) -> None:
    """Refuse, before the first forward, a run whose statistics and activations cannot fit.

    The weights were checked at load; what grows with `seq_len` and `batch_size` is the
    reducers' state (the totals, plus a shard's copy; large sum totals sit on disk while a CPU
    run's forwards run, and come back once they are done) and the forward's activations.
    Running out halfway would cost the time spent and say nothing useful.
    """
    from generator.executors import spilled_bytes

    model = loaded.model
    param = next(model.parameters())
    state = sum(r.nbytes() for rs in sinks.values() for r in rs)
    # on the CPU, large sum totals wait on disk while the forwards run (executors.spill_totals)
    on_disk = sum(spilled_bytes(rs) for rs in sinks.values()) if param.device.type == "cpu" else 0
    i = suite.inputs
    shapes = [(i.batch_size, i.seq_len), (i.batch_size, i.repeat.seq_len),
              (i.singular.batch_size, 2)]
    need = 2 * state - on_disk + max(memory.forward_bytes(model.config, b, t, param.element_size())
                           for b, t in shapes)
    free, where = memory.available(str(param.device))
    if need > free:
        raise AtlasError(loaded.spec.name, f"its statistics and activations need about "
                         f"{need / 1e9:.1f} GB of {where} on top of the weights, and "
                         f"{free / 1e9:.1f} GB is free",
                         "lower inputs.seq_len or inputs.batch_size, capture.points_per_site, "
                         "or disable experiments you do not need ([experiments.NAME] enabled = "
                         "false); or use a larger machine")


def _check_result(exp: Experiment, result: Result) -> None:
    """A result must report exactly the metrics its experiment declares."""
    if set(result.metrics) != set(exp.metrics):
        raise ValueError(f"{exp.name} returned metrics {sorted(result.metrics)}, declared "
                         f"{sorted(exp.metrics)}")


def _rows(table: Any) -> list[dict[str, Any]]:
    return table.to_dict(orient="records") if hasattr(table, "to_dict") else list(table)


def _put(store: artifacts.Store, loaded: models.LoadedModel, exp: Experiment, key: str,
         result: Result, ctx: Context, params: Any, token_inputs: dict[str, inputs.TokenInputs],
         seconds: float, status: str = "ok") -> None:
    prov = {"model": loaded.provenance, "experiment": exp.name,
            "params": dataclasses.asdict(params), "seed": ctx.seed,
            "inputs": {m: t.describe() for m, t in token_inputs.items() if m in exp.modes},
            "versions": versions(), "cache_key": key}
    files = {f"{t}.table.json": artifacts.dumps(_rows(rows)) for t, rows in result.tables.items()}
    files["result.json"] = artifacts.dumps(
        {"status": status, "metrics": result.metrics, "facts": result.facts,
         "notes": result.notes, "tables": sorted(result.tables)})
    files["provenance.json"] = artifacts.dumps(prov)
    files["run.json"] = artifacts.dumps({"date": datetime.datetime.now(datetime.timezone.utc)
                                         .isoformat(timespec="seconds"), "wall_seconds": seconds})
    store.put(f"{loaded.spec.name}/{exp.name}", key, files)
