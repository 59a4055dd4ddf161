"""In-place additions of large arrays (a run's totals += a shard's sums), split across threads.

A shard's merge adds its float32 sums into the run's float64 totals: the position means are
hundreds of MB (31M values for the suite at GPT-2-small x 1024 positions), added once per shard
while no forward runs. numpy adds on one thread, and the add is memory-bound; on this project's
2-core VMs two threads, each adding its own contiguous part, take half the time (19 against 37
ms for those 31M values, measured 2026-11-29). Element by element, so the sums are bitwise
numpy's whatever the split. numexpr (a library that threads such expressions) took 28 ms: it
converts in small blocks through its interpreter, where each part here is one numpy call.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

MIN_SPLIT = 1 << 20
"""Values below which an add stays on the calling thread (about 1 ms: a thread handoff would
cost more than it saves)."""

_pool: tuple[tuple[int, int], ThreadPoolExecutor] | None = None
"""((process id, helper threads), the executor): a forked child or a new thread count makes a
new one (a child inherits no threads, only the parent's executor object)."""
_pool_lock = threading.Lock()


def _helpers(n: int) -> ThreadPoolExecutor:
    """`n` helper threads of this process, made on first use."""
    global _pool
    key = (os.getpid(), n)
    with _pool_lock:
        if _pool is None or _pool[0] != key:
            if _pool is not None and _pool[0][0] == key[0]:  # this process's, at another size
                _pool[1].shutdown(wait=False)
            _pool = (key, ThreadPoolExecutor(n, thread_name_prefix="atlas-add"))
        return _pool[1]


def add_into(out: np.ndarray, b: np.ndarray) -> None:
    """`out += b` in place (b cast to out's dtype, as numpy's `np.add(out, b, out=out)`).

    Split into one contiguous part per torch intra-op thread (`torch.get_num_threads()`, the
    threads a run was given), the caller's thread adding the last part. Arrays that are not
    contiguous, or small, are added in one call.
    """
    parts = torch.get_num_threads()
    if parts < 2 or out.size < MIN_SPLIT or not (out.flags.c_contiguous
                                                 and b.flags.c_contiguous) or out.shape != b.shape:
        np.add(out, b, out=out)
        return
    flat_out, flat_b = out.reshape(-1), b.reshape(-1)
    step = -(-flat_out.size // parts)

    def add(i: int) -> None:
        np.add(flat_out[i:i + step], flat_b[i:i + step], out=flat_out[i:i + step])

    starts = range(0, flat_out.size, step)
    helpers = _helpers(parts - 1)
    futures = [helpers.submit(add, i) for i in starts[:-1]]
    add(starts[-1])
    for f in futures:
        f.result()
