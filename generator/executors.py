"""Where capture runs: in this process, or sharded over Ray actors. Both give the same numbers.

Each input mode is cut into shards of `capture.shard_batches` batches (the suite fixes the cut, not
the number of workers). Every shard is reduced into empty reducers (locally one set, reset between
shards, so buffers are allocated once) and the shard states are merged into the result in shard
order. Since each merge sees the same operands in the same order
wherever the shard ran, a sharded run is byte-identical to a single-process one, and memory holds
the result plus one shard's state, whatever the corpus size. Where the run gives a folder
(`spill`), the large sum totals (position means) stay in files there while the forwards run,
merged on disk, and come back when first read: the forwards then carry one shard's sums only.

On Ray, each actor loads the model itself, at the locked revision and on its own device
(`--cpus-per-worker`, `--gpus-per-worker`); the driver keeps only the config, the tokenizer and a
weightless (meta-device) copy of the model's structure, so Ray really takes the weights off the
driver. A shard travels as token ids plus reducer configs (JSON) and comes back as an `.npz` of
reducer states (`reducers.dump_states`): no pickle. A failed shard is retried on another actor,
and every failure is reported in the run summary; a shard that fails on every try fails its
model (and the run's exit status), never silently drops data.

The cluster is the one `--address` or `RAY_ADDRESS` names (`ray job submit` and KubeRay set the
latter; `auto` finds one started with `ray start`); resources are passed to `ray.init` only when
this process starts its own local cluster, since an existing cluster refuses them. The generator's
code and the Hugging Face / atlas environment variables travel to the workers in the job's
`runtime_env`, so a remote worker runs the driver's code with the driver's hub settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from generator.capture.hooks import Capture
from generator.errors import AtlasError, ExecutorError, ModelLoadError
from generator.inputs import TokenInputs
from generator.memory import release_free_heap
from generator.models import LoadedModel, ModelSpec
from generator.reducers.base import Reducer
from generator.reducers.states import dump_states, from_config, load_states, merge_states

log = logging.getLogger(__name__)

FAULT_DIR = "ATLAS_FAULT_DIR"
"""Test hook: a file `<mode>-<shard>` there makes that shard fail once (`.always`: every time)."""


def capture_shard(model: Any, adapter: Any, inputs: TokenInputs, reducers: list[Reducer],
                  device: Any, start: int = 0, stop: int | None = None,
                  bar: tqdm | None = None) -> int:
    """Run the forward passes of samples [start, stop) into empty `reducers`; returns batches run.

    Nothing in the loop waits for the device: the residual check is read once at the end of the
    shard (`Capture.verify`), and a reducer whose fixed-size device buffers turned out too small
    for this data (`regrow()`, e.g. the covariance's heavy-token rows) grows them, and the shard
    is run again from empty reducers, so the numbers are exact either way.
    """
    dev = torch.device(device)
    for _ in range(8):
        n = 0
        with Capture(model, adapter, reducers, deferred=True) as cap:
            for b in inputs.batches(start, stop):
                cap.run(b.on(dev))  # asynchronous copies; the host keeps its own copy
                n += 1
                if bar is not None:
                    bar.update(1)
            cap.verify()
        grown = [r for r in reducers if getattr(r, "regrow", None) is not None and r.regrow()]
        if not grown:
            return n
        log.info("shard %s-%s run again: %d reducer buffers grown", start, stop, len(grown))
        for r in reducers:
            r.reset()
    raise ExecutorError("capture", "reducer buffers kept overflowing", "report this as a bug")


def merge_totals_on_device(device: torch.device, reducers: list[Reducer]) -> bool:
    """Whether a run on `device` keeps its large totals there, merging each shard on the device.

    On a GPU, yes when they fit: the float64 totals of the reducers that can (`merge_on_device`)
    plus 1 GiB must fit in what the device has free, counting memory torch's allocator holds
    unused. Otherwise every shard's sums travel to the host and are added there while the GPU
    waits (the position means alone: 130 MB per shard at GPT-2-small x 1024, 3.5 GB at
    LLaMA-7B x 2048). On the CPU, no: the host is the device, and numpy's in-place float64 +=
    float32 is 3x faster than torch's (measured).
    """
    if device.type != "cuda":
        return False
    need = sum(r.nbytes() for r in reducers
               if type(r).merge_on_device is not Reducer.merge_on_device)
    free, _ = torch.cuda.mem_get_info(device)
    unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return need + (1 << 30) <= free + unused


SPILL_MIN_BYTES = 16 << 20
"""A reducer's merged totals go to disk between shards from this size up: the position means
(240 MB for the suite at GPT-2-small x 1024 positions) and the large reservoir's rows (29 MB)
go, the rest (a few MB each) stay in memory, where a file per shard would save nothing
measurable."""


def spilled_bytes(reducers: list[Reducer]) -> int:
    """Bytes of the totals `spill_totals` keeps on disk while a CPU run's forwards run.

    What the pre-flight memory check and the bench's extrapolations leave out of a CPU run's
    peak (a GPU run keeps its totals on the device where they fit).
    """
    return sum(r.spilled_nbytes() for r in reducers if r.spills(SPILL_MIN_BYTES))


def spill_totals(reducers: list[Reducer], folder: Path | None) -> None:
    """Keep the large totals in files in `folder` while capture runs (None: all in memory).

    A shard's forward passes then carry only the shard's own sums, not the run's totals as well
    (`generator.reducers.spill`): on GPT-2-small x 1024 positions, 240 MB less under the peak.
    """
    if folder is not None:
        for r in reducers:
            r.spill_to(folder, SPILL_MIN_BYTES)


def _n_batches(inputs: TokenInputs, start: int, stop: int) -> int:
    return -(-(stop - start) // inputs.batch_size)


class Local:
    """Shards one after another in this process."""

    def __init__(self, model: Any, adapter: Any, device: Any, shard_batches: int,
                 progress: bool = True, after_shard: Callable[[int], None] | None = None,
                 merge_on_device: bool | None = None) -> None:
        self.model, self.adapter, self.device = model, adapter, device
        self.shard_batches, self.progress = shard_batches, progress
        self.after_shard = after_shard
        """Called with the samples done so far once each shard is merged (the bench reads the
        peak memory there: how it grows with the corpus, within one process)."""
        self.merge_on_device = merge_on_device
        """Keep the run's large totals on the capture device (`merge_totals_on_device`); None:
        decided per run."""
        self.retried: list[str] = []
        self._parts: dict[str, list[Reducer]] = {}

    def _shard_reducers(self, configs: list[dict[str, Any]]) -> list[Reducer]:
        """One set of empty shard reducers per reducer configuration.

        Reset and reused by every shard (and every call): buffers are allocated once, not once
        per shard.
        """
        key = json.dumps(configs, sort_keys=True)
        if key not in self._parts:
            self._parts = {key: [from_config(c) for c in configs]}  # keep only the latest
        return self._parts[key]

    def capture(self, inputs: TokenInputs, reducers: list[Reducer], label: str,
                spill: Path | None = None) -> int:
        """Capture `inputs` into `reducers`; forward passes run. `spill`: see `spill_totals`."""
        configs = [r.config() for r in reducers]
        spill_totals(reducers, spill)
        total = _n_batches(inputs, 0, inputs.n_samples)
        n = 0
        with tqdm(total=total, desc=label, unit="batch", disable=not self.progress,
                  leave=False) as bar:
            part = self._shard_reducers(configs)
            on_device = self.merge_on_device
            if on_device is None:
                on_device = merge_totals_on_device(torch.device(self.device), reducers)
            for start, stop in inputs.shards(self.shard_batches):
                for r in part:
                    r.reset()  # empty, even after a shard that failed half-way
                n += capture_shard(self.model, self.adapter, inputs, part, self.device, start,
                                   stop, bar)
                merge_states(reducers, part, consume=False, on_device=on_device)
                release_free_heap()
                if self.after_shard is not None:
                    self.after_shard(stop)
        return n

    def close(self) -> None:
        pass


class ShardWorker:
    """A Ray actor: loads the model once, on its own device, then reduces the shards it is sent.

    A model that cannot be loaded on the worker is reported by `ready` (thing, cause, fix) rather
    than by the actor dying, so the driver can say why in the same words as a local run.
    """

    def __init__(self, spec: dict[str, Any], device: str, threads: int,
                 fp: dict[str, Any] | None = None) -> None:
        from generator import architectures, models
        from generator.memory import reuse_freed_memory

        reuse_freed_memory()  # as the CLI does in the driver
        torch.set_num_threads(threads)
        self.device, self.error = device, None
        try:
            self.loaded = models.load(ModelSpec(**spec), device, fp)
            self.adapter = architectures.for_config(self.loaded.model.config, self.loaded.spec.name)
        except AtlasError as exc:
            self.error = {"kind": type(exc).__name__, "thing": exc.thing, "cause": exc.cause,
                          "fix": exc.fix}

    def ready(self) -> dict[str, str] | None:
        """None once the model is loaded, else the load error's thing, cause and fix."""
        return self.error

    def position_table(self) -> Any:
        """The learned position table as float32 numpy, or None for rotary models.

        The driver holds no weights, and `pos_embed` reads this one table.
        """
        table = self.adapter.position_table(self.loaded.model)
        return None if table is None else table.detach().float().cpu().numpy()

    def run(self, configs: list[dict[str, Any]], ids: Any, mask: Any, first: int,
            batch_size: int, mode: str, shard: int) -> bytes:
        _injected_fault(mode, shard)
        reducers = [from_config(c) for c in configs]
        inputs = TokenInputs(mode, torch.as_tensor(ids), torch.as_tensor(mask), batch_size,
                             first=first)
        capture_shard(self.loaded.model, self.adapter, inputs, reducers, self.device)
        blob = dump_states(reducers)
        del reducers
        release_free_heap()
        return blob


def _injected_fault(mode: str, shard: int) -> None:
    folder = os.environ.get(FAULT_DIR)
    if not folder:
        return
    once, always = Path(folder) / f"{mode}-{shard}", Path(folder) / f"{mode}-{shard}.always"
    if always.exists():
        raise RuntimeError(f"injected fault in {mode} shard {shard} (every try)")
    try:
        once.unlink()
    except FileNotFoundError:
        return
    raise RuntimeError(f"injected fault in {mode} shard {shard} (first try)")


SHIPPED_PREFIXES = ("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "ATLAS_")
"""Environment variables the workers get from the driver: hub token, cache, endpoint and offline
mode (`HF_TOKEN`, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`...), and the atlas' own settings."""
SHIPPED = ("TOKENIZERS_PARALLELISM",)
READY_TIMEOUT_S = float(os.environ.get("ATLAS_RAY_READY_TIMEOUT", "1800"))
"""How long to wait for the first worker to load its model (an autoscaler may add the node)."""
_STARTED_HERE = {"local": False}


def runtime_env(job_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's runtime_env: this `generator` package as a module, and the shipped variables.

    A field or variable that the submitted job already sets (`ray job submit --runtime-env-json`,
    a KubeRay RayJob's `runtimeEnvYAML`) is left to the job: Ray refuses to merge a conflict.
    """
    env_vars = {k: v for k, v in sorted(os.environ.items())
                if k.startswith(SHIPPED_PREFIXES) or k in SHIPPED}
    ours: dict[str, Any] = {"py_modules": [str(Path(__file__).resolve().parent)],
                            "excludes": ["__pycache__", "*.pyc"], "env_vars": env_vars}
    job_env = _submitted_job_env() if job_env is None else job_env
    for key in [k for k in ours if k != "env_vars" and k in job_env]:
        del ours[key]
    if "py_modules" not in ours:
        ours.pop("excludes", None)
    taken = set(job_env.get("env_vars") or {})
    ours["env_vars"] = {k: v for k, v in env_vars.items() if k not in taken}
    return ours


def _submitted_job_env() -> dict[str, Any]:
    """The runtime_env of the job this driver was submitted as (`ray job submit`), or {}."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (json.JSONDecodeError, AttributeError, TypeError):
        return {}


def worker_device(requested: str | None, gpus_per_worker: float) -> str:
    """Where the actors put the model: a GPU exactly when each actor reserves one."""
    if gpus_per_worker > 0:
        if requested == "cpu":
            raise AtlasError("--device cpu", "contradicts --gpus-per-worker "
                             f"{gpus_per_worker:g}: the workers would reserve GPUs and not use them",
                             "drop one of the two")
        return "cuda"
    if requested == "cuda":
        raise AtlasError("--device cuda", "Ray workers reserve no GPU (--gpus-per-worker 0), so "
                         "Ray would not give them one", "pass --gpus-per-worker 1")
    return "cpu"


def connect(ray: Any, address: str | None, num_cpus: int) -> None:
    """Join the cluster `address` or RAY_ADDRESS names; with neither, start a local one.

    Only a cluster started here gets resources (`num_cpus`): Ray refuses them when connecting.
    `address="local"` rather than None, so a stray `ray start` on this machine is never joined
    by accident with resources it would refuse.
    """
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": False, "configure_logging": False, "runtime_env": runtime_env()}
    if target:
        _check_reachable(target, "--address" if address else "RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **quiet)
        elif target:  # RAY_ADDRESS: Ray reads it, as for the plain `ray.init()` of a submitted job
            ray.init(**quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
            _STARTED_HERE["local"] = True
    except Exception as exc:  # noqa: BLE001  (ConnectionError, RuntimeError, ValueError...)
        where = f"--address {target}" if address else (
            f"RAY_ADDRESS={target}" if target else "a local Ray cluster")
        raise ExecutorError(where, f"could not start or reach a Ray cluster ({exc})"[:500],
                            "start one with `ray start --head` and pass --address auto, check "
                            "RAY_ADDRESS, or unset both to run a local one") from None


def _check_reachable(target: str, flag: str, timeout: float = 10.0) -> None:
    """Fail in seconds when nothing listens at a host:port address (Ray itself retries for minutes).

    `auto` and `ray://` client addresses are left to Ray.
    """
    host, _, port = target.rpartition(":")
    if "://" in target or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(f"{flag} {target}", f"no Ray cluster answers there ({exc})",
                            "start one (`ray start --head`), or fix the address; the head's "
                            "GCS port is the one `ray start` printed (default 6379)") from None


def _capacity_problem(ray: Any, cpus: float, gpus: float) -> str | None:
    res = ray.cluster_resources()
    if res.get("CPU", 0) >= cpus and res.get("GPU", 0) >= gpus:
        return None
    return (f"the cluster has {res.get('CPU', 0):g} CPU and {res.get('GPU', 0):g} GPU, and each "
            f"worker asks for {cpus:g} CPU and {gpus:g} GPU")


class RayExecutor:
    """Shards spread over `workers` Ray actors, merged in shard order as they come back.

    Shards go only to actors that have loaded their model, so a cluster that can place fewer
    actors than asked for (or adds nodes later) still makes progress.
    """

    def __init__(self, spec: ModelSpec, device: str | None = "auto", workers: int = 2,
                 shard_batches: int = 4, address: str | None = None, retries: int = 2,
                 progress: bool = True, cpus_per_worker: int | None = None,
                 gpus_per_worker: float = 0.0, fp: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise AtlasError("--executor ray", "Ray is not installed",
                             "pip install 'latent-atlas[ray]' (make setup installs it)") from None
        self.ray, self.spec, self.retries, self.progress = ray, spec, retries, progress
        self.shard_batches = shard_batches
        self.retried: list[str] = []
        self.actors: list[Any] = []
        self.live: list[int] = []
        self.pending: dict[Any, int] = {}
        self.errors: list[str] = []
        self.device = worker_device(device, gpus_per_worker)
        local = not (address or os.environ.get("RAY_ADDRESS"))
        cpus = cpus_per_worker or (max(1, (os.cpu_count() or 1) // workers) if local else 1)
        connect(ray, address, workers * cpus)
        problem = _capacity_problem(ray, cpus, gpus_per_worker)
        if problem and _STARTED_HERE["local"]:
            raise ExecutorError("--cpus-per-worker/--gpus-per-worker", problem,
                                "lower them, or run on a machine or cluster that has them")
        if problem:
            log.warning("%s; waiting up to %.0fs for the autoscaler", problem, READY_TIMEOUT_S)
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=1)(ShardWorker)
        self.asks = f"{cpus:g} CPU and {gpus_per_worker:g} GPU"
        try:
            self.actors = [actor.remote(dataclasses.asdict(spec), self.device, int(max(1, cpus)),
                                        fp) for _ in range(workers)]
            self.pending = {a.ready.remote(): i for i, a in enumerate(self.actors)}
            self._first_ready()
        except BaseException:
            self.close()
            raise

    def _first_ready(self) -> None:
        """Wait for one actor to hold the model; raise the load error if the model cannot load."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.live:
            if not self.pending:
                raise ExecutorError(f"Ray workers for {self.spec.name}", "none could start: "
                                    + "; ".join(self.errors)[:400],
                                    "see the worker logs (`ray logs`, or the dashboard)")
            left = deadline - time.monotonic()
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=max(0.0, left))
            if not ready:
                raise ExecutorError(
                    f"Ray workers for {self.spec.name}", f"none had loaded the model after "
                    f"{READY_TIMEOUT_S:.0f}s; each asks for {self.asks}, the cluster has "
                    f"{self.ray.cluster_resources()}",
                    "lower --cpus-per-worker/--gpus-per-worker, add nodes, or raise "
                    "ATLAS_RAY_READY_TIMEOUT (seconds) for a slow download")
            self._on_ready(ready[0])

    def _on_ready(self, ref: Any) -> None:
        i = self.pending.pop(ref)
        try:
            error = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001  (the actor died while loading)
            self.errors.append(f"worker {i}: {_why(exc)}")
            return
        if error is None:
            self.live.append(i)
        elif error["kind"] == "ModelLoadError":  # the model is not available there: say why
            raise ModelLoadError(error["thing"], error["cause"], error["fix"])
        else:
            self.errors.append(f"worker {i}: {error['thing']}: {error['cause']}")

    def position_table(self) -> Any:
        """The learned position table from a worker (the driver holds no weights)."""
        return self.ray.get(self.actors[self.live[0]].position_table.remote())

    def _dispatch(self, queue: deque, inflight: dict[Any, tuple[int, int]], load: Counter,
                  tries: list[int], failed_on: list[set[int]], plan: list[tuple[int, int]],
                  configs: list[dict[str, Any]], inputs: TokenInputs) -> None:
        """Send queued shards to ready actors, two in flight each.

        A retried shard avoids the actors it failed on when another one is ready.
        """
        while queue and self.live:
            k = queue[0]
            turn = (k + tries[k]) % len(self.live)
            order = self.live[turn:] + self.live[:turn]
            a = min([i for i in order if i not in failed_on[k]] or order, key=lambda i: load[i])
            if load[a] >= 2:
                return
            queue.popleft()
            start, stop = plan[k]
            ref = self.actors[a].run.remote(configs, inputs.ids[start:stop].numpy(),
                                            inputs.mask[start:stop].numpy(), inputs.first + start,
                                            inputs.batch_size, inputs.mode, k)
            inflight[ref] = (k, a)
            load[a] += 1

    def capture(self, inputs: TokenInputs, reducers: list[Reducer], label: str,
                spill: Path | None = None) -> int:
        ray = self.ray
        configs = [r.config() for r in reducers]
        spill_totals(reducers, spill)
        plan = inputs.shards(self.shard_batches)
        queue, tries = deque(range(len(plan))), [0] * len(plan)
        failed_on: list[set[int]] = [set() for _ in plan]
        inflight: dict[Any, tuple[int, int]] = {}
        load: Counter = Counter()
        done: dict[int, bytes] = {}
        merged = 0
        with tqdm(total=len(plan), desc=f"{label} (ray)", unit="shard",
                  disable=not self.progress, leave=False) as bar:
            while queue or inflight:
                self._dispatch(queue, inflight, load, tries, failed_on, plan, configs, inputs)
                ready, _ = ray.wait(list(inflight) + list(self.pending), num_returns=1)
                if ready[0] in self.pending:  # another actor has loaded its model: it joins
                    self._on_ready(ready[0])
                    continue
                k, a = inflight.pop(ready[0])
                load[a] -= 1
                try:
                    done[k] = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001  (task error or lost actor: both retried)
                    tries[k] += 1
                    failed_on[k].add(a)
                    why = _why(exc)
                    self.retried.append(f"{label} shard {k}: try {tries[k]} failed ({why})")
                    log.warning("%s shard %d failed (%s); retrying", label, k, why)
                    if tries[k] > self.retries:
                        raise ExecutorError(f"{label} shard {k}",
                                            f"failed on all {tries[k]} tries; last error: {why}",
                                            "see the worker logs; the model's results were not "
                                            "written, rerun when fixed") from None
                    queue.appendleft(k)
                    continue
                while merged in done:
                    merge_states(reducers, load_states(done.pop(merged)))
                    merged += 1
                    bar.update(1)
        return sum(_n_batches(inputs, a, b) for a, b in plan)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors, self.live, self.pending = [], [], {}


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1][:200]


def driver_model(spec: ModelSpec, fp: dict[str, Any], executor: RayExecutor) -> LoadedModel:
    """What the driver of a Ray run holds: config, tokenizer, and the model's structure (no weights).

    The structure lives on the meta device; input sizes, block count and width come from it. The
    one table an experiment reads from the weights (a learned position table) is fetched from a
    worker. Every forward runs on the workers.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from generator import architectures, models

    where, gguf_file, local, kwargs = models.pretrained_args(spec)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        arch = architectures.for_config(config, spec.name)
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001  (as models.load: every cause explained)
        raise models._explain(spec, where, gguf_file, local, exc) from exc
    dtype = models._dtype(spec)
    with torch.device("meta"):
        shell = AutoModel.from_config(config).to(dtype).eval()
    if arch.pos_embed is not None:
        table = executor.position_table()
        shell.get_submodule(arch.pos_embed).weight = torch.nn.Parameter(
            torch.tensor(table), requires_grad=False)
    torch.set_grad_enabled(False)
    return LoadedModel(spec, shell, tokenizer,
                       {**fp, "tokenizer_sha256": models.tokenizer_hash(tokenizer)})
