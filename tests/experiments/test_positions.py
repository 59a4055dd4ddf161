"""positions: a helix planted in the per-position mean residual must be found at its frequencies."""

import math

import torch
from helpers import fake_context, run_planted

from generator.experiment import ChartView
from generator.experiments.positions import EXPERIMENT

SEQ_LEN = 33  # positions 1-32 are analysed (position 0 left out): whole cycles over the window
WINDOW = SEQ_LEN - 1


def _helix(k1: int, a1: float, k2: int, a2: float, d: int = 16) -> torch.Tensor:
    """(SEQ_LEN, d) per-position means: a circle at k1 cycles in dims 0-1, one at k2 in dims 2-3,
    plus a constant offset in dim 5 (as real residuals have)."""
    p = torch.arange(SEQ_LEN, dtype=torch.float64)
    m = torch.zeros(SEQ_LEN, d, dtype=torch.float64)
    m[:, 0], m[:, 1] = a1 * torch.cos(2 * math.pi * k1 * p / WINDOW), a1 * torch.sin(
        2 * math.pi * k1 * p / WINDOW)
    m[:, 2], m[:, 3] = a2 * torch.cos(2 * math.pi * k2 * p / WINDOW), a2 * torch.sin(
        2 * math.pi * k2 * p / WINDOW)
    m[:, 5] = 10.0
    return m.float()


def _random_per_position(d: int = 16) -> torch.Tensor:
    return 3 * torch.randn(SEQ_LEN, d, generator=torch.Generator().manual_seed(11))


def _states(means: torch.Tensor, noise: float = 1.0):
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        return means[positions] + noise * torch.randn(*positions.shape, means.shape[1],
                                                      generator=g)
    return make


def _ctx(**kw):
    return fake_context(n_blocks=6, d_model=16, seq_len=SEQ_LEN, n_samples=24, **kw)


def test_planted_helix_frequencies_are_measured():
    r = run_planted(EXPERIMENT, _ctx(), _states(_helix(2, 4.0, 5, 2.0)))
    m = r.metrics
    for prefix in ("raw", "unit"):
        assert m[f"{prefix}_cycles_pc1"] == 2 and m[f"{prefix}_cycles_pc2"] == 2
        assert m[f"{prefix}_cycles_pc3"] == 5 and m[f"{prefix}_cycles_pc4"] == 5
        assert m[f"{prefix}_periodicity"] > 0.9
    # variance per dim a^2/2: the k1 pair holds 8 of 20 each, the k2 pair 2 of 20 each
    assert 0.37 < m["raw_evr_pc1"] < 0.43 and 0.08 < m["raw_evr_pc3"] < 0.12
    claim = EXPERIMENT.claims[0]
    assert m[claim.metric] >= claim.default
    assert set(m) <= set(EXPERIMENT.metrics)
    rows = r.tables["raw_by_position"]
    assert [row["position"] for row in rows] == list(range(1, SEQ_LEN))  # every position kept
    comps = {row["component"]: row for row in r.tables["raw_components"]}
    assert abs(comps[1]["period_tokens"] - WINDOW / 2) < 1e-9


def test_random_positions_are_not_periodic_and_the_claim_fails():
    r = run_planted(EXPERIMENT, _ctx(), _states(_random_per_position()))
    claim = EXPERIMENT.claims[0]
    assert r.metrics["raw_periodicity"] < 0.4
    assert r.metrics[claim.metric] < claim.default


def test_short_sequences_are_not_applicable_and_longer_ones_are():
    assert "too short" in EXPERIMENT.skip(fake_context(seq_len=6), EXPERIMENT.params())
    assert EXPERIMENT.skip(_ctx(), EXPERIMENT.params()) is None


def test_charts_are_built_from_the_stored_tables_and_thinned():
    r = run_planted(EXPERIMENT, _ctx(), _states(_helix(2, 4.0, 5, 2.0)))
    charts = EXPERIMENT.charts(r, ChartView("synthetic", 3, max_chart_points=10))
    specs = {k: c.to_dict() for k, c in charts.items()}
    assert set(specs) == {"raw_pairs", "raw_curves", "unit_pairs", "unit_curves"}
    assert "10 of 32 points shown" in specs["raw_pairs"]["title"]["subtitle"]
