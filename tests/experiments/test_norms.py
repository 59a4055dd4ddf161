"""norms: a spike planted at position 0 must be found, in the blocks where it was planted."""

import torch
from helpers import fake_context, run_planted

from generator.experiments.norms import EXPERIMENT


def _states(spike: float, from_block: int):
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, 16, generator=g)  # norm about 4 everywhere
        if site.block >= from_block:
            h[positions == 0] *= spike
        return h
    return make


def test_planted_position0_spike_is_measured():
    ctx = fake_context(n_blocks=6)
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=0))
    assert 40 < r.metrics["pos0_norm_ratio"] < 60
    assert 40 < r.metrics["pos0_norm_ratio_min_middle"] < 60
    by_block = {row["block"]: row["ratio"] for row in r.tables["pos0_ratio_by_block"]}
    assert all(40 < v < 60 for v in by_block.values())


def test_no_spike_gives_a_ratio_near_one_and_the_claim_fails():
    ctx = fake_context(n_blocks=6)
    r = run_planted(EXPERIMENT, ctx, _states(spike=1.0, from_block=0))
    assert 0.7 < r.metrics["pos0_norm_ratio"] < 1.3
    claim = EXPERIMENT.claims[0]
    assert r.metrics[claim.metric] < claim.default


def test_spike_only_in_late_blocks_shows_in_the_per_block_table():
    ctx = fake_context(n_blocks=6)  # middle blocks: 1-4
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=3))
    by_block = {row["block"]: row["ratio"] for row in r.tables["pos0_ratio_by_block"]}
    assert by_block[2] < 1.5 and by_block[3] > 40
    assert r.metrics["pos0_norm_ratio_min_middle"] < 1.5


def test_charts_are_built_from_the_stored_tables():
    from generator.experiment import ChartView

    r = run_planted(EXPERIMENT, fake_context(n_blocks=4), _states(50.0, 0))
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(r, ChartView("synthetic", 3)).items()}
    assert set(specs) == {"norm_by_depth", "norm_by_position", "pos0_ratio_by_block"}
