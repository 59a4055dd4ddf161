"""MKL's vector math is started on one thread before the first forward, so every run computes alike.

On the CPU, torch computes tanh, exp, erf and others of float tensors with MKL's vector math
library (VML), in chunks of 2,048 elements spread over its threads. When the first of these
calls in a process comes from two threads at once, one thread can run different, less exact
code for that call: measured on this project's 2-core Intel VM (torch 2.13.0+cpu, MKL 2024.2),
the first call in a fresh process on 3,072 floats (two chunks) gave a different result in 3 of
60 processes for `torch.tanh`, 3 of 40 for `torch.exp` and 9 of 40 for `torch.erf`; for tanh
the difference was all in the main thread's chunk (GPT-2's tanh GELU: 7e-6 relative error
there, against 5e-8 in the other chunk), and the second and later calls agreed in every
process. So the first forward of a run, and every artifact computed from it, differed in the
last bits between runs now and then: a rerun after a killed run changed a rounded digit of a
table (`tiny-gpt2/repeat`). One call on one thread first (fewer than 2,048 elements run inline)
settles it for the whole process, whichever function it calls (an `exp` first fixed the `tanh`
after it: a one-time choice inside the library, it seems): no difference in 150 processes (50
each of tanh, exp and erf) after this module's call.
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
