"""The bench's host-overhead proxy measures real capture work against the same forward."""

from generator.bench import host_overhead_proxy


def test_host_overhead_proxy_times_capture_against_the_forward():
    res = host_overhead_proxy(reps=1)
    # at width 64 the reducers' host work is a large share of a batch: capture is clearly slower
    assert 0.1 < res["host_proxy_width64_capture_vs_forward"] < 0.95
    assert res["host_proxy_width64_capture_extra_ms_per_batch"] > 0.5


def test_paper_memory_counts_what_a_real_capture_holds():
    """The statistics `paper_memory` counts on a weightless model are what a capture of that
    shape really ends with (the reservoir full, every mean slot present), twice over."""
    import torch
    from helpers import tiny_gpt2

    from generator import architectures
    from generator.bench import paper_memory, suite_reducers
    from generator.executors import Local
    from generator.inputs import TokenInputs

    model = tiny_gpt2(n_layer=2)
    n, t = 32, 16  # enough tokens to fill every reservoir
    reducers = suite_reducers(model, n, t)
    ids = torch.randint(0, int(model.config.vocab_size), (n, t),
                        generator=torch.Generator().manual_seed(0))
    Local(model, architectures.for_config(model.config), "cpu", 2, progress=False).capture(
        TokenInputs("text", ids, torch.ones_like(ids, dtype=torch.bool), 4), reducers, "x")
    held = sum(a.nbytes for r in reducers for a in r.arrays().values())
    mem = paper_memory(model.config, "text", n, t, 4, 4)
    assert round(mem["statistics_gb"] * 1e9) == 2 * held
    weights = sum(p.numel() for p in model.parameters()) * 4
    assert round(mem["weights_gb"] * 1e9) == weights
    assert mem["total_gb"] > mem["weights_gb"] + mem["statistics_gb"]
