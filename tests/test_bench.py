"""The bench measures what it claims: the host-overhead proxy, paper-size memory, UMAP, peak RSS."""

import sys

import pytest

from generator.bench import host_overhead_proxy


def test_host_overhead_proxy_times_capture_against_the_forward():
    res = host_overhead_proxy(reps=1)
    # at width 64 the reducers' host work is a large share of a batch: capture is clearly slower
    assert 0.1 < res["host_proxy_width64_capture_vs_forward"] < 0.95
    assert res["host_proxy_width64_capture_extra_ms_per_batch"] > 0.5


def test_paired_ratio_gives_the_paper_style_ratio_only_when_asked():
    """Both ratios from real timed passes; without `seed` the paper-style passes are not run
    (the bench times them once per shape, not for every covariance setting)."""
    import torch
    from helpers import tiny_gpt2

    from generator.bench import paired_ratio, suite_reducers

    model = tiny_gpt2(n_layer=2)
    # passes of a few ms: 3 repetitions, so one scheduling hiccup cannot decide a median
    ids = torch.randint(0, int(model.config.vocab_size), (8, 16),
                        generator=torch.Generator().manual_seed(0))
    both = paired_ratio(model, ids, 4, lambda: suite_reducers(model, 8, 16), reps=3)
    assert 0 < both["capture"] < 1.5 and 0 < both["seed"] < 1.5
    assert both["capture_seconds"] > 0
    for k in ("capture", "seed"):  # each median lies within its run's spread
        lo, hi = both[f"{k}_range"]
        assert lo <= round(both[k], 3) <= hi
    alone = paired_ratio(model, ids, 4, lambda: suite_reducers(model, 8, 16), reps=1, seed=False)
    assert set(alone) == {"capture", "capture_range", "capture_seconds", "forward_seconds",
                          "pool_seconds", "parts_seconds", "capture_page_faults",
                          "forward_page_faults", "capture_system_seconds",
                          "forward_system_seconds"}
    # the covariance's pooled products ran inside the timed capture, and took part of it
    assert 0 < alone["pool_seconds"] < alone["capture_seconds"]
    parts = alone["parts_seconds"]  # every kind of reducer the suite makes took its own time
    assert all(v > 0 for v in parts.values()), parts
    assert parts["covariance products"] == alone["pool_seconds"]
    assert sum(parts.values()) < alone["capture_seconds"]


def test_parts_timer_counts_nested_parts_once_and_puts_every_method_back(monkeypatch):
    """A product made slow (planted: 50 ms) inside `end_batch` is the products' time, not the
    rows' too; after the timer, the classes hold exactly what they held before."""
    import time

    import torch

    from generator.bench import PARTS, PartsTimer
    from generator.capture import hooks
    from generator.capture.batch import Batch, State
    from generator.capture.sites import Site
    from generator.reducers.base import Reducer
    from generator.reducers.covariance import Covariance
    from generator.reducers.means import MeanState

    real = Covariance._add_pool

    def slow(cov):
        time.sleep(0.05)
        real(cov)
    monkeypatch.setattr(Covariance, "_add_pool", slow)
    owners = (Covariance, MeanState, State, hooks)
    before = [dict(o.__dict__) for o in owners]
    site, d = Site(1, "attn", 0), 16
    cov, mean = Covariance([site], d, unit=True), MeanState([site], d, keep=("site", "position"),
                                                           seq_len=8)
    b = Batch(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.bool),
              torch.arange(2))
    timer = PartsTimer()
    with timer:
        cov.begin_batch(b)
        state = State(site, torch.randn(2, 8, d), b)
        cov.update(state)  # the unit covariance asks for the norms first
        mean.update(state)
        cov.end_batch()  # the pool's product: 50 ms planted
        mean.end_batch()
    spent = timer.per_call[0]
    assert set(spent) == set(PARTS)
    assert spent["covariance products"] >= 0.05
    assert spent["covariance rows, weights and folds"] < 0.04  # the product is not in it too
    assert spent["norms of every state, and their statistics"] > 0  # where norms2d ran
    assert spent["mean sums"] > 0 and spent["reservoirs"] == spent["residual check"] == 0
    assert [dict(o.__dict__) for o in owners] == before
    assert MeanState.merge is Reducer.merge  # inherited methods are inherited again


def _huge_pages_always() -> bool:
    """Transparent huge pages for every mapping: a fresh 128 MB block is then ~64 faults."""
    from pathlib import Path

    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or _huge_pages_always(),
                    reason="counts 4 KB page faults (Linux, huge pages only where asked for)")
def test_paired_ratio_counts_the_page_faults_of_each_side(monkeypatch):
    """A capture that touches fresh memory after every shard (128 MB: mmapped, 32k pages; torch,
    since numpy asks for huge pages) shows it in its own page faults and system time, not in the
    forward's."""
    import torch
    from helpers import tiny_gpt2

    import generator.executors as executors
    from generator.bench import paired_ratio, suite_reducers

    kept = []
    monkeypatch.setattr(executors, "release_free_heap",
                        lambda: kept.append(float(torch.ones(32 << 20).sum())))
    model = tiny_gpt2(n_layer=2)
    ids = torch.randint(0, int(model.config.vocab_size), (8, 16),
                        generator=torch.Generator().manual_seed(0))
    r = paired_ratio(model, ids, 4, lambda: suite_reducers(model, 8, 16), reps=3, seed=False)
    assert kept  # the shard hook ran inside the timed captures
    assert r["capture_page_faults"] >= r["forward_page_faults"] + 30_000
    assert r["capture_system_seconds"] > r["forward_system_seconds"]


@pytest.mark.parametrize("spill_from", [16 << 20, 0])
def test_paper_memory_counts_what_a_real_capture_holds(monkeypatch, spill_from):
    """The statistics `paper_memory` counts on a weightless model are what a capture of that
    shape really ends with (the reservoir full, every mean slot present), twice over, less the
    totals a CPU run keeps on disk during its forwards, the sums and the reservoirs' rows (none
    at this size by default; all of them with the threshold at 0)."""
    import torch
    from helpers import tiny_gpt2

    from generator import architectures, executors
    from generator.bench import paper_memory, suite_reducers
    from generator.executors import Local
    from generator.inputs import TokenInputs
    from generator.reducers.base import Sums
    from generator.reducers.reservoir import Reservoir

    model = tiny_gpt2(n_layer=2)
    n, t = 32, 16  # enough tokens to fill every reservoir
    reducers = suite_reducers(model, n, t)
    ids = torch.randint(0, int(model.config.vocab_size), (n, t),
                        generator=torch.Generator().manual_seed(0))
    Local(model, architectures.for_config(model.config), "cpu", 2, progress=False).capture(
        TokenInputs("text", ids, torch.ones_like(ids, dtype=torch.bool), 4), reducers, "x")
    held = sum(a.nbytes for r in reducers for a in r.arrays().values())
    sums = sum(a.nbytes for r in reducers if isinstance(r, Sums) for a in r.arrays().values())
    monkeypatch.setattr(executors, "SPILL_MIN_BYTES", spill_from)
    mem = paper_memory(model.config, "text", n, t, 4, 4)
    rows = sum(r.arrays()["vectors"].nbytes for r in reducers if isinstance(r, Reservoir))
    on_disk = sums + rows if spill_from == 0 else 0
    assert sums > 0 and round(mem["statistics_on_disk_gb"] * 1e9) == on_disk
    assert round(mem["statistics_gb"] * 1e9) == 2 * held - on_disk
    weights = sum(p.numel() for p in model.parameters()) * 4
    assert round(mem["weights_gb"] * 1e9) == weights
    assert mem["total_gb"] > mem["weights_gb"] + mem["statistics_gb"]


def test_cuml_umap_is_timed_where_installed(monkeypatch):
    """With cuML importable its UMAP is timed at the asked size (after a small warm-up);
    without it the result says the 100k figure is umap-learn's, extrapolated."""
    import sys
    import types

    from generator.bench import cuml_umap_timing

    monkeypatch.setitem(sys.modules, "cuml.manifold", None)  # import fails: not installed
    assert "not installed" in cuml_umap_timing(points=10)["umap_gpu"]
    fitted = []

    class FakeUMAP:
        def __init__(self, **kw):
            self.kw = kw

        def fit_transform(self, x):
            fitted.append((x.shape, self.kw["metric"]))
            return x[:, :2]

    fake = types.ModuleType("cuml.manifold")
    fake.UMAP = FakeUMAP
    monkeypatch.setitem(sys.modules, "cuml", types.ModuleType("cuml"))
    monkeypatch.setitem(sys.modules, "cuml.manifold", fake)
    res = cuml_umap_timing(points=3000, d=8)
    assert res["umap_gpu"] == "cuML" and res["umap_cuml_points"] == 3000
    assert fitted == [((1000, 8), "cosine"), ((3000, 8), "cosine")]


def test_peak_rss_restarts_so_each_shard_has_its_own_peak():
    """The bench reads each shard's own peak; a restart that did nothing would repeat the first."""
    import numpy as np

    from generator.bench import peak_rss_mb

    big = np.ones(40_000_000)  # 320 MB, touched
    del big
    before = peak_rss_mb(restart=True)
    after = peak_rss_mb()
    assert before >= after + 250
    assert peak_rss_mb() >= after - 5  # without a restart: the peak so far


def test_extrapolation_scales_each_paper_size_from_the_throughput_of_its_own_dtype():
    """The GPU bench measures float32 and bfloat16 apart: LLaMA-7B (bfloat16) is scaled from the
    bfloat16 throughput, GPT-2 and the vocabularies (float32) from the float32 one. Hours are
    tokens x parameters over tokens/s, so doubling one dtype's throughput halves its sizes
    alone; with no umap-learn timing there is no UMAP figure."""
    from helpers import tiny_gpt2

    from generator.bench import PAPER_SIZES, extrapolate

    model = tiny_gpt2(n_layer=2)
    one, two = {}, {}
    extrapolate(one, model, {4: 1000.0, 2: 1000.0}, "x")
    extrapolate(two, model, {4: 1000.0, 2: 2000.0}, "x")
    for label, (*_, bytes_per) in PAPER_SIZES.items():
        want = 0.5 if bytes_per == 2 else 1.0
        assert abs(two[f"x_{label}_hours"] / one[f"x_{label}_hours"] - want) < 1e-12
        assert two[f"x_{label}_total_gb"] == one[f"x_{label}_total_gb"] > 0
    n, t = PAPER_SIZES["gpt2_128x1024"][2:4]
    params = one["x_gpt2_128x1024_weights_gb"] * 1e9 / 4
    gpt2 = sum(p.numel() for p in model.parameters())
    assert abs(one["x_gpt2_128x1024_hours"] - n * t / 1000 * params / gpt2 / 3600) < 1e-9
    assert not any("umap" in k for k in one)


def test_llama7b_shape_is_made_in_bfloat16_on_the_device_asked_and_leaves_the_default_dtype():
    """The GPU bench's LLaMA-7B: 6.7B bfloat16 parameters made where asked (here the meta
    device: no memory), and torch's default dtype restored afterwards."""
    import torch

    from generator.bench import llama7b_shaped

    before = torch.get_default_dtype()
    model = llama7b_shaped("meta")
    assert torch.get_default_dtype() == before
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"meta"}
    assert 6.6e9 < sum(p.numel() for p in params) < 6.8e9
    assert model.config.hidden_size == 4096 and model.config.num_hidden_layers == 32


def test_profile_counts_the_gpu_pools_products_unless_told_otherwise(monkeypatch):
    """The profile stands for a GPU's launches: by default the covariances pool rows as on a
    GPU (`GPU_POOL_BYTES`); with a pool of 64 rows the same loop makes more products per batch,
    so more operators. No host sync either way."""
    import torch
    from helpers import tiny_gpt2

    from generator.bench import profile_capture
    from generator.reducers.covariance import Covariance

    torch.manual_seed(0)
    model = tiny_gpt2(n_layer=2)
    gpu = profile_capture(model, (8, 32, 4), every=1)
    small = profile_capture(model, (8, 32, 4), every=1, pool_bytes=64 * 4 * model.config.n_embd)
    assert small["kernel_ops_capture_extra"] > gpu["kernel_ops_capture_extra"] > 0
    assert gpu["syncs_per_batch"] == small["syncs_per_batch"] == 0
    assert Covariance.POOL_BYTES == 4 << 20  # restored

