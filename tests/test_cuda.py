"""The GPU path (reducers accumulate on the device): same statistics as on the CPU.

Skipped on machines without CUDA (CI has none); run wherever a GPU is lent.
"""

import numpy as np
import pytest
import torch
from helpers import tiny_gpt2, tiny_llama

from generator import architectures as adapters
from generator.bench import suite_reducers
from generator.executors import Local
from generator.inputs import TokenInputs
from generator.suite import CaptureOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_reducers_on_cuda_match_the_cpu(make):
    model = make(n_layer=3)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (10, 24), generator=gen)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[3, 15:] = False  # padding takes the masked paths too
    results = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        # float32 products on both (the device comparison; `auto` may pick bfloat16 on one)
        reducers = suite_reducers(m, 10, 24, options=CaptureOptions(
            cov_every=2, shard_batches=2, cov_matmul="float32"))
        Local(m, adapters.for_config(m.config), device, 2, progress=False).capture(
            TokenInputs("text", ids, mask, 4), reducers, device)
        results[device] = [r.arrays() for r in reducers]
    for cpu, gpu in zip(results["cpu"], results["cuda"], strict=True):
        assert cpu.keys() == gpu.keys()
        for k in cpu:
            if k in ("key", "depth", "block", "sample", "position", "token"):
                np.testing.assert_array_equal(cpu[k], gpu[k], err_msg=k)  # same tokens chosen
            elif k == "hist":  # a norm on a bin edge may land one bin over
                assert cpu[k].sum() == gpu[k].sum() and np.abs(cpu[k] - gpu[k]).sum() <= 4
            else:
                np.testing.assert_allclose(gpu[k], cpu[k], rtol=2e-3, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bench_cuda_loop_checks_report_a_sync_free_loop(dtype):
    """What `bench --device cuda` records: no host sync inside the capture loop (sync-debug
    "error" mode raises on any), and a device memory peak measured against the forward's."""
    from generator.bench import cuda_loop_checks

    model = tiny_gpt2(n_layer=3).to("cuda", dtype)
    res = cuda_loop_checks(model, "tiny", (8, 24, 4), 256)
    assert res["cuda_loop_sync_free_tiny"], res["cuda_loop_sync_error_tiny"]
    assert res["cuda_capture_peak_vs_forward_peak_tiny"] >= 1.0


def test_bench_cuda_split_times_host_and_device_and_counts_kernels():
    """`cuda_split`: the capture issues more kernels than the forward, and a loop's wall time
    (host issue plus the device's wait) is never below its host time."""
    from generator.bench import cuda_split

    model = tiny_gpt2(n_layer=3).to("cuda")
    res = cuda_split(model, "tiny", (8, 24, 4), 256, reps=2)
    for key in ("forward", "capture"):
        host, wall = (res[f"cuda_split_tiny_{key}_{k}_ms_per_batch"] for k in ("host", "wall"))
        assert 0 < host <= wall
        assert res[f"cuda_split_tiny_{key}_top_ops_calls_and_self_cpu_ms_per_batch"]
    kernels = [res[f"cuda_split_tiny_{k}_kernels_per_batch"] for k in ("forward", "capture")]
    assert 0 < kernels[0] < kernels[1]
