"""The bench's host-overhead proxy measures real capture work against the same forward."""

from generator.bench import host_overhead_proxy


def test_host_overhead_proxy_times_capture_against_the_forward():
    res = host_overhead_proxy(reps=1)
    # at width 64 the reducers' host work is a large share of a batch: capture is clearly slower
    assert 0.1 < res["host_proxy_width64_capture_vs_forward"] < 0.95
    assert res["host_proxy_width64_capture_extra_ms_per_batch"] > 0.5
