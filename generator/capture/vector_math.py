"""MKL's vector math is started on one thread before the first forward, so every run computes alike.

On the CPU, torch computes tanh, exp, erf and others of float tensors with MKL's vector math
library (VML), in chunks of 2,048 elements spread over its threads. The library picks its code
on its first call in a process; when that first call comes from two threads at once, one of them
can run different, less exact code for that call. Measured on this project's 2-core Intel VM
(torch 2.13.0+cpu, MKL 2024.2), the first call in a fresh process on 3,072 floats (two chunks)
gave a different result in 3 of 60 processes for `torch.tanh`, 3 of 40 for `torch.exp` and 9 of
40 for `torch.erf`, always in the main thread's chunk (GPT-2's tanh GELU: 7e-6 relative error
there, against 5e-8 in the other chunk); the second and later calls agreed in every process.
So the first forward of a run, and every artifact computed from it, differed in the last bits
between runs now and then: a rerun after a killed run changed a rounded digit of a table
(`tiny-gpt2/repeat`). One call on one thread first (fewer than 2,048 elements run inline)
settles the choice for the whole process: no difference in 150 processes after it.
"""

from __future__ import annotations

import functools


@functools.cache
def settle_vector_math() -> None:
    """Call the vector math functions once, on the calling thread only (once per process)."""
    import torch

    with torch.inference_mode():
        for dtype in (torch.float32, torch.float64):
            x = torch.linspace(-2.0, 2.0, 64, dtype=dtype)
            for fn in (torch.tanh, torch.exp, torch.erf, torch.log1p, torch.sin):
                fn(x)
