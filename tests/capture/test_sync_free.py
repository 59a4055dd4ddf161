"""The capture loop never waits for the device, and stays exact and deterministic doing so.

On CUDA a host sync (`.item()`, `nonzero`, boolean-mask indexing, a device-to-host copy) stalls
the pipeline once per site; the operators that cause one are visible on the CPU too, so the
torch profiler on CPU shows that none runs per batch. What must be decided on the host (token
subsamples, reservoir candidates) is decided from the host copy of the ids.
"""

import collections
import sys

import numpy as np
import pytest
import torch
from helpers import padded_ids, spy_regrow, tiny_gpt2, tiny_llama
from torch.profiler import ProfilerActivity, profile

from generator import architectures as adapters
from generator.bench import SYNC_OPS
from generator.capture.hooks import Capture
from generator.capture.sites import all_sites
from generator.errors import CaptureError
from generator.executors import Local, capture_shard
from generator.inputs import TokenInputs
from generator.reducers.covariance import Covariance
from generator.reducers.means import MeanState
from generator.reducers.norms import NormStats
from generator.reducers.reservoir import Reservoir
from generator.reducers.sample_norms import SampleNorms
from generator.reducers.states import dump_states


def _reducers(n_layer, d, t, n):
    sites = all_sites(n_layer)
    mid = [s for s in sites if s.point in ("attn", "mlp")]
    return [NormStats(sites, t), SampleNorms(sites[:5], n, t),
            MeanState(sites, d, keep=("site", "position"), seq_len=t),
            MeanState(sites, d, keep=("site", "sample"), max_samples=n - 2, min_position=1),
            MeanState(mid, d, keep=("position",), seq_len=t),
            Covariance(mid, d, every=4, min_position=1, keep_above=1.2, drop_above=4.0),
            Covariance(sites, d, unit=True, every=4, min_position=1, drop_above=4.0),
            Covariance(mid, d), Reservoir(sites, d, k=30, seed=5)]


def _inputs(n=8, t=12, bs=2, pads=None):
    ids, mask = padded_ids(n, t, seed=3, pads={3: 7, 6: 2} if pads is None else pads)
    return TokenInputs("text", ids, mask, bs)


def _counts(fn):
    calls = collections.Counter()
    orig = torch.Tensor.numpy, torch.Tensor.cpu

    def wnp(self, *a, **k):
        code = sys._getframe(1).f_code  # the numpy Gram product (CPU only) and the batch's
        if code.co_name != "gram" and not code.co_filename.endswith("batch.py"):  # host copy
            calls["host"] += 1
        return orig[0](self, *a, **k)

    def wcpu(self, *a, **k):
        calls["host"] += 1
        return orig[1](self, *a, **k)

    torch.Tensor.numpy, torch.Tensor.cpu = wnp, wcpu
    try:
        with profile(activities=[ProfilerActivity.CPU]) as p:
            fn()
    finally:
        torch.Tensor.numpy, torch.Tensor.cpu = orig
    ops = collections.Counter({e.key: e.count for e in p.key_averages()})
    return ops, calls["host"]


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
@pytest.mark.parametrize("pads", [{}, None])
def test_no_host_sync_inside_the_capture_loop(make, pads):
    model = make(n_layer=3)
    adapter = adapters.for_config(model.config)
    inputs = _inputs(pads=pads)
    batches = list(inputs.batches())
    reducers = _reducers(3, 32, 12, 8)
    capture_shard(model, adapter, inputs, reducers, "cpu")  # warm-up: buffers allocated
    for r in reducers:
        r.arrays()
        r.reset()

    def forward():
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)

    def loop():
        with Capture(model, adapter, reducers, deferred=True) as cap:
            for b in batches:
                cap.run(b)
        assert cap._bad is not None  # the check ran, on the device

    fwd, _ = _counts(forward)
    cap, host = _counts(loop)
    extra = {k: cap[k] - fwd[k] for k in SYNC_OPS if cap[k] != fwd[k]}
    assert extra == {}, extra
    assert host == 0


def _tamper(model):
    """Add 0.5 to block 1's attention output after the hooks installed so far have seen it."""
    attn = adapters.for_config(model.config).module(model, "attn", 1)
    return attn.register_forward_hook(lambda _m, _a, out: (out[0] + 0.5, *out[1:]))


def test_the_deferred_residual_check_fails_the_shard_naming_the_block():
    model = tiny_gpt2(n_layer=3)
    adapter = adapters.for_config(model.config)
    with Capture(model, adapter, _reducers(3, 32, 12, 8), deferred=True) as cap:
        handle = _tamper(model)  # runs after our hooks: the block adds a value we never saw
        try:
            for b in _inputs().batches():
                cap.run(b)  # nothing waits for the device here
            with pytest.raises(CaptureError, match="block 1"):
                cap.verify()  # one sync per shard; the replay names the block
        finally:
            handle.remove()
        cap.run(next(iter(_inputs().batches())))
        cap.verify()  # clean again


@pytest.mark.parametrize("drop_above", [0.0, 1.2])
def test_heavy_rows_that_overflow_their_reservation_rerun_the_shard_exactly(monkeypatch,
                                                                            drop_above):
    """Too few rows reserved for heavy tokens: the shard runs again with more, same numbers.

    With `drop_above`, tokens above it take reserved rows too (at weight 0): they must not
    crowd a heavy token out unnoticed."""
    model = tiny_llama(n_layer=2)
    adapter = adapters.for_config(model.config)
    mid = [s for s in all_sites(2) if s.point in ("attn", "mlp")]

    def cov():
        return Covariance(mid, 32, every=4, min_position=1, keep_above=1.1,
                          drop_above=drop_above)

    ref = cov()
    monkeypatch.setattr(Covariance, "HEAVY_FRACTION", 1.0)
    ref = cov()
    capture_shard(model, adapter, _inputs(), [ref], "cpu")
    monkeypatch.setattr(Covariance, "HEAVY_FRACTION", 0.0)
    small = cov()
    grown = spy_regrow(monkeypatch)
    capture_shard(model, adapter, _inputs(), [small], "cpu")
    assert grown[0] is True and grown[-1] is False  # too small once, then enough
    for k in ("n", "mean", "m2"):
        np.testing.assert_allclose(small.state[k], ref.state[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_same_inputs_give_byte_identical_states(make):
    model = make(n_layer=2)
    adapter = adapters.for_config(model.config)
    blobs = []
    for _ in range(2):
        reducers = _reducers(2, 32, 12, 8)
        Local(model, adapter, "cpu", 2, progress=False).capture(_inputs(), reducers, "x")
        blobs.append(dump_states(reducers))
    assert blobs[0] == blobs[1]
