"""positions: a helix planted in the per-position mean residual must be found at its frequencies;
a planted massive position must be detected, reported and kept out of the fit."""

import json
import math

import numpy as np
import torch
from helpers import fake_context, run_planted

from generator.analysis import periodic
from generator.experiment import ChartView, Result
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


def _states(means: torch.Tensor, noise: float = 1.0, massive: dict[int, float] | None = None):
    """States around the planted per-position means; `massive` scales whole positions' states
    (a massive activation: one fixed direction, norm far above the rest)."""
    big = torch.zeros(means.shape[1])
    big[7] = 1.0
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = means[positions] + noise * torch.randn(*positions.shape, means.shape[1],
                                                   generator=g)
        for q, norm in (massive or {}).items():
            h[positions == q] = h[positions == q] + norm * big
        return h
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


def test_a_planted_massive_position_is_detected_reported_and_left_out_of_the_fit():
    """Position 3 with a norm ~40x the rest: found, listed, not fitted; the helix still shows,
    and PC1 is not decided by one point."""
    r = run_planted(EXPERIMENT, _ctx(), _states(_helix(2, 4.0, 5, 2.0), massive={3: 400.0}))
    m = r.metrics
    assert r.facts["massive_positions"] == [3] and r.facts["left_out"] == [0, 3]
    assert m["massive_positions"] == 1
    rows = {row["position"]: row for row in r.tables["excluded_positions"]}
    assert rows[3]["why"].startswith("massive norm") and rows[3]["norm_times_median"] > 20
    assert rows[0]["why"].startswith("position 0")
    fitted = [row["position"] for row in r.tables["raw_by_position"]]
    assert 3 not in fitted and 0 not in fitted and len(fitted) == SEQ_LEN - 2
    for prefix in ("raw", "unit"):  # the gap is interpolated: frequencies are unchanged
        assert m[f"{prefix}_cycles_pc1"] == 2 and m[f"{prefix}_cycles_pc3"] == 5
        assert m[f"{prefix}_periodicity"] > 0.85
        assert m[f"{prefix}_pc1_top_share"] < 0.15  # spread over ~31 positions
    assert 0.37 < m["raw_evr_pc1"] < 0.45
    sub = " ".join(EXPERIMENT.charts(r, ChartView("synthetic", 3))["raw_pairs"].to_dict()
                   ["title"]["subtitle"])
    assert "massive-norm position 3 left out" in sub and "position 0 left out" in sub


def test_a_position_with_an_ordinary_norm_but_an_outlying_mean_state_is_left_out():
    """Like SmolLM2's position 1: norm about 2x the median, mean state far from the others."""
    r = run_planted(EXPERIMENT, _ctx(), _states(_helix(2, 4.0, 5, 2.0), noise=8.0,
                                                massive={5: 60.0}))
    assert r.facts["massive_positions"] == [] and r.facts["outlying_positions"] == [5]
    assert r.metrics["outlying_positions"] == 1 and r.facts["left_out"] == [0, 5]
    rows = {row["position"]: row for row in r.tables["excluded_positions"]}
    assert rows[5]["norm_times_median"] < 2.5 and rows[5]["distance_times_median"] > 8
    assert rows[5]["why"].startswith("outlying mean state")
    assert 5 not in [row["position"] for row in r.tables["raw_by_position"]]
    assert r.metrics["raw_cycles_pc1"] == 2 and r.metrics["raw_pc1_top_share"] < 0.15
    sub = " ".join(EXPERIMENT.charts(r, ChartView("synthetic", 3))["raw_pairs"].to_dict()
                   ["title"]["subtitle"])
    assert "position 5 left out: mean state over 8x the median distance" in sub


def test_left_in_the_massive_position_would_be_the_first_component_by_itself():
    """What the exclusion prevents: the same per-position means with position 3 fitted."""
    helix = _helix(2, 4.0, 5, 2.0).double().numpy()
    helix[3, 7] += 400.0
    r = Result()
    periodic.analyse(r, "raw", helix[1:], np.arange(1, SEQ_LEN), 6)
    assert r.metrics["raw_evr_pc1"] > 0.95 and r.metrics["raw_pc1_top_share"] > 0.9
    assert r.tables["raw_components"][0]["top_position"] == 3


def test_a_control_with_nothing_massive_leaves_out_only_position_0():
    r = run_planted(EXPERIMENT, _ctx(), _states(_helix(2, 4.0, 5, 2.0)))
    assert r.facts["massive_positions"] == [] and r.metrics["massive_positions"] == 0
    assert r.facts["outlying_positions"] == [] and r.metrics["outlying_positions"] == 0
    assert [row["position"] for row in r.tables["excluded_positions"]] == [0]
    sub = EXPERIMENT.charts(r, ChartView("synthetic", 3))["raw_pairs"].to_dict()["title"]
    assert "massive" not in " ".join(sub["subtitle"])


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
    for name, spec in specs.items():
        assert len(spec.get("datasets", {})) == 1, name  # chart_files keeps one table
        text = json.dumps(spec)
        assert '"title": "pc1"' not in text and '"title": "value"' not in text
    pairs = json.dumps(specs["raw_pairs"])
    assert "principal component 1" in pairs and "sequence position" in pairs
    assert "datum.end == 'first'" in pairs and "datum.end == 'last'" in pairs  # ends marked
    (rows,) = specs["raw_curves"]["datasets"].values()  # panels say variance and frequency
    assert "PC 1 · 40.1% of variance · 2 cycles (period 16 tokens)" in {
        row["component"] for row in rows}
