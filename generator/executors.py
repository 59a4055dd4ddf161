"""Where capture runs: in this process, or sharded over Ray actors. Both give the same numbers.

Each input mode is cut into shards of `capture.shard_batches` batches (the suite fixes the cut, not
the number of workers). Every shard is reduced into empty reducers (locally one set, reset between
shards, so buffers are allocated once) and the shard states are merged into the result in shard
order. Since each merge sees the same operands in the same order
wherever the shard ran, a sharded run is byte-identical to a single-process one, and memory holds
the result plus one shard's state, whatever the corpus size.

On Ray, one actor per worker loads the model once; a shard travels as token ids plus reducer
configs (JSON) and comes back as an `.npz` of reducer states (`reducers.dump_states`): no pickle.
A failed shard is retried on another actor, and every failure is reported in the run summary; a
shard that fails on every try fails its model, never silently drops data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from generator.capture.hooks import Capture
from generator.errors import AtlasError
from generator.inputs import TokenInputs
from generator.models import ModelSpec
from generator.reducers.base import Reducer
from generator.reducers.states import dump_states, from_config, load_states, merge_states

log = logging.getLogger(__name__)

FAULT_DIR = "ATLAS_FAULT_DIR"
"""Test hook: a file `<mode>-<shard>` there makes that shard fail once (`.always`: every time)."""


def capture_shard(model: Any, adapter: Any, inputs: TokenInputs, reducers: list[Reducer],
                  device: Any, start: int = 0, stop: int | None = None,
                  bar: tqdm | None = None) -> int:
    """Run the forward passes of samples [start, stop) into `reducers`; returns batches run."""
    n = 0
    with Capture(model, adapter, reducers) as cap:
        for b in inputs.batches(start, stop):
            cap.run(type(b)(b.input_ids.to(device), b.mask.to(device), b.sample_ids.to(device)))
            n += 1
            if bar is not None:
                bar.update(1)
    return n


def _n_batches(inputs: TokenInputs, start: int, stop: int) -> int:
    return -(-(stop - start) // inputs.batch_size)


class Local:
    """Shards one after another in this process."""

    def __init__(self, model: Any, adapter: Any, device: Any, shard_batches: int,
                 progress: bool = True) -> None:
        self.model, self.adapter, self.device = model, adapter, device
        self.shard_batches, self.progress = shard_batches, progress
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

    def capture(self, inputs: TokenInputs, reducers: list[Reducer], label: str) -> int:
        configs = [r.config() for r in reducers]
        total = _n_batches(inputs, 0, inputs.n_samples)
        n = 0
        with tqdm(total=total, desc=label, unit="batch", disable=not self.progress,
                  leave=False) as bar:
            part = self._shard_reducers(configs)
            for start, stop in inputs.shards(self.shard_batches):
                for r in part:
                    r.reset()  # empty, even after a shard that failed half-way
                n += capture_shard(self.model, self.adapter, inputs, part, self.device, start,
                                   stop, bar)
                merge_states(reducers, part, consume=False)
        return n

    def close(self) -> None:
        pass


class ShardWorker:
    """A Ray actor: loads the model once, then reduces the shards it is sent."""

    def __init__(self, spec: dict[str, Any], device: str, threads: int) -> None:
        from generator import architectures, models
        from generator.memory import reuse_freed_memory

        reuse_freed_memory()  # as the CLI does in the driver
        torch.set_num_threads(threads)
        self.loaded = models.load(ModelSpec(**spec), device)
        self.adapter = architectures.for_config(self.loaded.model.config, self.loaded.spec.name)
        self.device = device

    def run(self, configs: list[dict[str, Any]], ids: Any, mask: Any, first: int,
            batch_size: int, mode: str, shard: int) -> bytes:
        _injected_fault(mode, shard)
        reducers = [from_config(c) for c in configs]
        inputs = TokenInputs(mode, torch.as_tensor(ids), torch.as_tensor(mask), batch_size,
                             first=first)
        capture_shard(self.loaded.model, self.adapter, inputs, reducers, self.device)
        return dump_states(reducers)


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


class RayExecutor:
    """Shards spread over `workers` Ray actors, merged in shard order as they come back."""

    def __init__(self, spec: ModelSpec, device: str, workers: int, shard_batches: int,
                 address: str | None = None, retries: int = 2, progress: bool = True) -> None:
        try:
            import ray
        except ImportError:
            raise AtlasError("--executor ray", "Ray is not installed",
                             "pip install 'latent-atlas[ray]' (make setup installs it)") from None
        self.ray, self.spec, self.retries, self.progress = ray, spec, retries, progress
        self.shard_batches = shard_batches
        self.retried: list[str] = []
        if not ray.is_initialized():
            try:
                ray.init(address=address, num_cpus=None if address else workers,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # noqa: BLE001  (ConnectionError, RuntimeError, ValueError...)
                raise AtlasError(f"--address {address or '(local)'}",
                                 f"could not start or reach a Ray cluster ({exc})"[:400],
                                 "start one with `ray start --head`, or drop --address "
                                 "to run a local one") from None
        threads = max(1, torch.get_num_threads() // workers) if not address else 1
        actor = ray.remote(num_cpus=1, max_restarts=1)(ShardWorker)
        self.actors = [actor.remote(dataclasses.asdict(spec), device, threads)
                       for _ in range(workers)]

    def capture(self, inputs: TokenInputs, reducers: list[Reducer], label: str) -> int:
        ray = self.ray
        configs = [r.config() for r in reducers]
        plan = inputs.shards(self.shard_batches)
        queue, tries = deque(range(len(plan))), [0] * len(plan)
        inflight: dict[Any, int] = {}
        done: dict[int, bytes] = {}
        merged = 0
        with tqdm(total=len(plan), desc=f"{label} (ray)", unit="shard",
                  disable=not self.progress, leave=False) as bar:
            while queue or inflight:
                while queue and len(inflight) < 2 * len(self.actors):
                    k = queue.popleft()
                    start, stop = plan[k]
                    actor = self.actors[(k + tries[k]) % len(self.actors)]
                    ref = actor.run.remote(configs, inputs.ids[start:stop].numpy(),
                                           inputs.mask[start:stop].numpy(), inputs.first + start,
                                           inputs.batch_size, inputs.mode, k)
                    inflight[ref] = k
                ready, _ = ray.wait(list(inflight), num_returns=1)
                k = inflight.pop(ready[0])
                try:
                    done[k] = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001  (task error or lost actor: both retried)
                    tries[k] += 1
                    why = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1][:200]
                    self.retried.append(f"{label} shard {k}: try {tries[k]} failed ({why})")
                    log.warning("%s shard %d failed (%s); retrying", label, k, why)
                    if tries[k] > self.retries:
                        raise AtlasError(f"{label} shard {k}",
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
        self.actors = []
