"""Process memory settings for runs: freed memory is reused, not given back and faulted in again.

A forward pass allocates and frees tensors of a few to tens of MB per layer. By default glibc
trims freed memory off the top of the heap (or unmaps it) soon after, so the next batch takes a
page fault for every 4 KB it touches again: on the 2-core VMs here, 300k faults and 0.6 s of
system time per 3.2 s of GPT-2-small forward (2 batches of 8 x 128 tokens). With blocks below
32 MB served from the heap and up to 64 MB of free heap kept, the same forward takes almost no
faults. Larger blocks (reducer states: hundreds of MB at 1024 positions) are mmapped and go back
to the system when freed. Peak RSS over 48 x 1024 tokens (3 shards) measured 1882 MB with these
settings, 1935 MB with glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
from pathlib import Path
from typing import Any

from generator.errors import AtlasError

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> Any:
    """The C library, or None where it cannot be found or loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def reuse_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Set glibc's mmap and trim thresholds (no-op elsewhere); True when both were applied."""
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_TRIMMED_AT = [0]
"""RSS (bytes) at which the last trim was made, before it: the next one waits until the process
grew past that level."""


def release_free_heap(keep: int = 256 << 20, grown: int = 64 << 20) -> int:
    """Give free heap memory back to the system when the process has crept up since last time.

    Called after each shard's merge. Blocks freed in the middle of the heap are never trimmed by
    glibc (only its top is), and a long run's mix of tensor sizes leaves more of them behind
    shard after shard: on a GPT-2-small run of 128 x 1024 tokens the peak RSS grew 14% from the
    second shard to the eighth with about 550 MB free in the heap between shards, 3% when that
    free memory was handed back after each merge. Handing it back after every shard costs,
    though: the trim itself (6-19 ms) and a page fault for every 4 KB the next shard touches
    again (1.5% of a 2-batch shard at GPT-2-small 8 x 128, measured). So it is done only when
    more than `keep` bytes are free in the heap and the RSS is more than `grown` above the level
    at which the last trim was made: creep is bounded by `grown`, and a steady run never trims.

    The level is the RSS before that trim, not after it: the next shard faults most of the
    trimmed pages back in, so measured from below, a run whose heap holds more than `keep`
    free trimmed after every shard at the same level, paying the trim and the faults each time
    for no lower peak (5 trims in 6 shards of the bench's paired runs, measured; now the first
    only). Returns the free bytes found (0 where glibc's `mallinfo2` is missing).
    """
    libc = _libc()
    if libc is None:
        return 0
    try:
        libc.mallinfo2.restype = _MallInfo2
        free = int(libc.mallinfo2().fordblks)
        level = rss_bytes()
        if free > keep and level > _TRIMMED_AT[0] + grown:
            libc.malloc_trim(ctypes.c_size_t(keep))
            _TRIMMED_AT[0] = level
        return free
    except (OSError, AttributeError):
        return 0


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2) means no limit


def cgroup_free(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, then v1), or None when unlimited.

    psutil reports the machine's free memory; a container or a CI job limited by its cgroup is
    killed long before that runs out.
    """
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
                                   ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        if limit is not None and limit < UNLIMITED:
            return max(0, limit - (_read_int(root / usage_file) or 0))
    return None


def rlimit_free() -> int | None:
    """Bytes of address space left under `ulimit -v` (RLIMIT_AS), or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    import psutil

    return max(0, soft - psutil.Process().memory_info().vms)


def available(device: str) -> tuple[int, str]:
    """Free bytes where tensors will live, and what that place is called.

    On the CPU the smallest of: the machine's available memory, what the cgroup limit leaves,
    and what `ulimit -v` leaves.
    """
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0]), "GPU memory"
    import psutil

    free = [int(psutil.virtual_memory().available), cgroup_free(), rlimit_free()]
    return min(f for f in free if f is not None), "RAM"


def forward_bytes(config: Any, batch: int, seq_len: int, element_size: int) -> int:
    """A generous estimate of one forward pass's working memory (activations, attention scores).

    A few (B, T, D) and (B, T, FFN) tensors live at once, plus one block's (B, H, T, T) scores
    (eager attention materializes them). Weights are counted separately (`models.check_fits`).
    """
    d = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 0)
    ffn = int(getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 4 * d)
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 1)
    tokens = batch * seq_len
    return element_size * (tokens * (8 * d + 3 * ffn) + batch * heads * seq_len * seq_len * 2)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for numpy's and torch's allocation failures on CPU and GPU (torch's are RuntimeErrors)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text)


def out_of_memory(thing: str, stage: str, exc: BaseException) -> AtlasError:
    """The named error for an allocation that failed: what was running, and how to need less."""
    return AtlasError(thing, f"ran out of memory during {stage} ({type(exc).__name__}: "
                      f"{str(exc)[:200]})",
                      "lower inputs.batch_size or inputs.seq_len, set dtype = \"bfloat16\" for it, "
                      "lower capture.points_per_site, or run it on a machine with more memory "
                      "(models already built are kept)")
