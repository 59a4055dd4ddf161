import hashlib
import subprocess
import sys

import pytest
import torch

from generator import architectures
from generator.capture import hooks
from generator.capture.batch import Batch
from generator.capture.vector_math import settle_vector_math

FIRST_CALL = """
import hashlib, sys, torch
torch.set_num_threads(2)
{settle}
x = torch.linspace(-3, 3, 4096)  # two chunks of torch's vector math: one per thread
print(hashlib.sha256(torch.erf(x).numpy().tobytes()).hexdigest())
"""


def _first_calls(n: int, settle: str) -> list[str]:
    """The first `torch.erf` of n fresh processes, two at a time (where their threads race)."""
    code = FIRST_CALL.format(settle=settle)
    out = []
    for i in range(0, n, 2):
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                 for _ in range(min(2, n - i))]
        out += [p.communicate(timeout=120)[0].strip() for p in procs]
    return out


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="the first-call race needs two threads")
def test_the_first_vector_math_call_of_every_process_agrees_once_settled():
    """Without the settling call, 4 of 24 fresh processes computed a different first erf of these
    values (MKL 2024.2, 2 threads; 0 of 24 with it): 20 all agreeing would then happen 2.6% of
    the time."""
    settle_vector_math()
    with torch.inference_mode():
        want = torch.erf(torch.linspace(-3, 3, 4096))
    ref = hashlib.sha256(want.numpy().tobytes()).hexdigest()
    got = _first_calls(20, "from generator.capture.vector_math import settle_vector_math\n"
                           "settle_vector_math()")
    assert got == [ref] * 20


def test_capture_settles_vector_math_before_its_first_forward(monkeypatch):
    from helpers import tiny_gpt2

    model = tiny_gpt2()
    calls = []
    monkeypatch.setattr(hooks, "settle_vector_math", lambda: calls.append("settled"))
    forward = model.forward

    def recorded(*args, **kwargs):
        calls.append("forward")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recorded)
    cap = hooks.Capture(model, architectures.for_config(model.config), [])
    with cap:
        cap.run(Batch(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool),
                      torch.arange(1)))
    assert calls[:2] == ["settled", "forward"]
