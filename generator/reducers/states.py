"""Reducer states as files and messages: rebuild from config, serialize to `.npz`, merge shards.

A shard travels as JSON configs plus arrays, never a pickle. Every reducer kind is found from
the modules of this package (a class with a `kind`), so a new statistic is one new file.
"""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from generator.capture.sites import Site
from generator.reducers.base import Reducer


@cache
def kinds() -> dict[str, type[Reducer]]:
    """`kind` -> reducer class, from every module of `generator.reducers`."""
    import generator.reducers as package

    found: dict[str, type[Reducer]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Reducer) and obj is not Reducer \
                    and "kind" in vars(obj) \
                    and obj.__module__ == module.__name__:
                found[obj.kind] = obj
    return found


def from_config(config: dict[str, Any]) -> Reducer:
    """An empty reducer equal in kind, sites and parameters to the one that wrote `config`."""
    params = dict(config)
    cls = kinds()[params.pop("kind")]
    sites = [Site(int(d), str(p), int(b)) for d, p, b in params.pop("sites")]
    return cls(sites, **params)


def share_identical(needs: Iterable[dict[str, dict[str, Reducer]]]) -> dict[str, list[Reducer]]:
    """Point every request for the same statistic at one reducer; the distinct ones per mode.

    `needs`: per experiment, mode -> name -> reducer. Experiments often ask the same thing (the
    mean final residual by position, say); reducers equal in kind, sites and parameters would
    do the same work at every site of every batch. They are only read after the capture, so
    one object serves all who asked. Returns mode -> its distinct reducers in first-asked
    order: the sinks of that mode's capture.
    """
    shared: dict[tuple[str, str], Reducer] = {}
    for need in needs:
        for mode, named in need.items():
            for name, r in named.items():
                key = (mode, json.dumps(r.config(), sort_keys=True))
                named[name] = shared.setdefault(key, r)
    sinks: dict[str, list[Reducer]] = {}
    for (mode, _), r in shared.items():
        sinks.setdefault(mode, []).append(r)
    return sinks


def dump_states(reducers: list[Reducer]) -> bytes:
    """Reducer states as one `.npz` (arrays) with their configs as JSON inside: no pickle."""
    meta = json.dumps([r.config() for r in reducers], sort_keys=True).encode()
    arrays = {f"r{i}.{k}": v for i, r in enumerate(reducers) for k, v in r.arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(meta, dtype=np.uint8), **arrays)
    return buf.getvalue()


def load_states(blob: bytes) -> list[Reducer]:
    """The reducers `dump_states` wrote, ready to `merge` (pickle is refused on load)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        reducers = [from_config(c) for c in meta]
        for i, r in enumerate(reducers):
            r.load({k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(f"r{i}.")})
    return reducers


def save_states(path: Path, reducers: list[Reducer]) -> None:
    """Write a shard's states to a file, to be merged later, possibly on another machine."""
    from generator.fsutil import write_bytes_atomic

    write_bytes_atomic(path, dump_states(reducers))


def merge_states(into: list[Reducer], shard: list[Reducer], consume: bool = True,
                 on_device: bool = False) -> None:
    """Merge a shard's reducers into `into`, refusing states made for others.

    `consume`: the shard's arrays are used up (may be adopted); otherwise they are only read,
    and the shard's reducers can be `reset` and reused. `on_device`: totals that can stay on
    the shard's device do (`Reducer.merge_on_device`), the rest are merged on the host.
    """
    if [r.config() for r in into] != [r.config() for r in shard]:
        raise ValueError("shard states were made for different reducers (suite or model changed)")
    for acc, part in zip(into, shard, strict=True):
        if not (on_device and acc.merge_on_device(part)):
            acc.merge(part, consume=consume)
