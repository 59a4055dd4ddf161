"""Large sum totals kept on disk between shards, so a capture's forward passes do not carry them.

The position means are a run's largest state: float64 sums by site and position (240 MB for the
suite at GPT-2-small x 1024 positions, several GB at LLaMA-7B x 2048), touched only when a shard
is merged, once per shard, while the shard's own float32 sums take the forward's updates. Held in
memory, they sat under every forward pass: the capture's peak was 1.5x the forward's on this
project's CPU (PERFORMANCE.md). Written out after each merge, they cost a sequential write
and read per shard through the page cache (about 0.2 s for 240 MB, against about 20 s of
forwards in such a shard) and come back into memory only when an experiment reads them.

A merge into a spilled total streams: the old file and the shard's sums are read chunk by chunk
and the sum is written to a new file, which replaces the old one only once complete. So a write
that fails (a full disk) leaves the old total intact, the caller adds in memory instead, and
nothing is lost. The additions are numpy's float64 += float32, element by element, as in memory:
a spilled run's totals are bitwise those of one that kept them in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.errors import AtlasError
from generator.reducers.adding import add_into

CHUNK_BYTES = 8 << 20
"""Bytes of a total read, added and written at a time: small against the state, large enough
that the Python loop around each chunk costs nothing measurable."""


@dataclass(frozen=True)
class Spilled:
    """Where a reducer's arrays were written, and how to read them back."""

    path: Path
    layout: tuple[tuple[str, tuple[int, ...], str], ...]
    """(key, shape, dtype) per array, in file order."""


def write(path: Path, arrays: dict[str, np.ndarray],
          dtypes: dict[str, np.dtype] | None = None) -> Spilled:
    """Write `arrays` back to back (raw, C order; as `dtypes` where given) to `path`.

    Converted chunk by chunk, so a float32 shard written as float64 totals never takes its
    float64 size in memory. A failed write removes the file.
    """
    dtypes = {k: np.dtype((dtypes or {}).get(k, v.dtype)) for k, v in arrays.items()}
    layout = tuple((k, tuple(v.shape), dtypes[k].str) for k, v in arrays.items())
    try:
        with open(path, "wb") as f:
            for k, v in arrays.items():
                flat = np.asarray(v).reshape(-1)
                step = _items(dtypes[k])
                for i in range(0, len(flat), step):
                    chunk = np.ascontiguousarray(flat[i:i + step], dtype=dtypes[k])
                    f.write(memoryview(chunk.view(np.uint8)))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spilled(path, layout)


def read(spilled: Spilled) -> dict[str, np.ndarray]:
    """The arrays `write` wrote, in memory again."""
    out: dict[str, np.ndarray] = {}
    with open(spilled.path, "rb") as f:
        for key, shape, dtype in spilled.layout:
            a = np.empty(shape, dtype)
            view = a.reshape(-1).view(np.uint8)
            if f.readinto(memoryview(view)) != view.nbytes:
                raise OSError(f"{spilled.path} is shorter than the state written to it")
            out[key] = a
    return out


def add(spilled: Spilled, parts: dict[str, np.ndarray]) -> Spilled:
    """The spilled totals plus `parts` (same keys and shapes), as a new file that replaces the old.

    Streams chunk by chunk; until the final rename the old file is untouched, so on any error
    (raised to the caller) the totals on disk are still the ones before this merge.
    """
    new = spilled.path.with_name(spilled.path.name + ".next")
    try:
        with open(spilled.path, "rb") as src, open(new, "wb") as dst:
            for key, shape, dtype in spilled.layout:
                part = np.asarray(parts[key]).reshape(-1)
                if part.size != int(np.prod(shape)):
                    raise ValueError(f"{key}: {part.size} values to add to a total of shape {shape}")
                step = _items(np.dtype(dtype))
                buf = np.empty(min(step, part.size), dtype)
                for i in range(0, part.size, step):
                    chunk = buf[:min(step, part.size - i)]
                    raw = memoryview(chunk.view(np.uint8))
                    if src.readinto(raw) != raw.nbytes:
                        raise OSError(f"{spilled.path} is shorter than the state written to it")
                    add_into(chunk, part[i:i + len(chunk)])
                    dst.write(raw)
        os.replace(new, spilled.path)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    return spilled


def mapped(path: Path, shape: tuple[int, ...], dtype: type = np.float32,
           create: bool = False) -> np.ndarray:
    """A writable array that lives in the file `path` (made, its blocks reserved, with `create`).

    For totals written a few rows at a time and read once (the reservoir's rows): only the
    pages touched while the array is mapped count in the process's memory, none once it is
    dropped, and a later mapping sees what was written (the page cache). The blocks are
    reserved when the file is made (`posix_fallocate`), so a full disk fails there, as an
    OSError, not later as a SIGBUS on a write into the mapping.
    """
    if create:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        try:
            with open(path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, nbytes)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)


def lost(path: Path, what: str, exc: OSError) -> AtlasError:
    """The error for totals that could not be read back from `path` (`what`: whose)."""
    return AtlasError(str(path), f"could not be read back ({exc}): the run's {what}, kept on "
                      "disk between shards, are lost",
                      "keep the artifact folder's disk available while a run writes to it, "
                      "and rerun")


def _items(dtype: np.dtype) -> int:
    return max(1, CHUNK_BYTES // dtype.itemsize)
