"""layerwise: a residual stream that turns at a planted block, or lies along one direction, must
show the turn in the centroid steps and the direction in PC1."""

import json
import math

import torch
from helpers import fake_context, run_planted

from generator.experiment import ChartView, Result
from generator.experiments.layerwise import EXPERIMENT

D = 16
CHARTS = {"pca_unit", "pca_by_position", "pca_by_sample", "centroid_step"}


def _drift(turn_at: int):
    """Residual states 6 x a direction in the e0-e1 plane + unit noise: the direction turns 0.1
    rad per block, and a quarter turn more from block `turn_at` on."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, D, generator=g)
        angle = 0.1 * (site.block + 1) + (math.pi / 2 if site.block >= turn_at else 0.0)
        h[..., 0] += 6 * math.cos(angle)
        h[..., 1] += 6 * math.sin(angle)
        return h
    return make


def _along(scale: float):
    """Residual states scale x (a standard normal per token) along e0, + unit noise."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, D, generator=g)
        h[..., 0] += scale * torch.randn(*positions.shape, generator=g)
        return h
    return make


def test_the_block_that_turns_the_stream_has_the_largest_centroid_step():
    ctx = fake_context(n_blocks=6, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _drift(turn_at=4))
    assert r.metrics["centroid_step_max_block"] == 4
    steps = {row["block"]: row["cosine_distance"] for row in r.tables["centroid_steps"]}
    assert list(steps) == [0, 1, 2, 3, 4, 5]  # embed -> block 0, then block to block
    assert steps[4] > 0.8
    assert all(v < 0.05 for b, v in steps.items() if b != 4)
    assert 0.1 < r.metrics["centroid_step_mean"] < 0.25


def test_a_dominant_direction_gives_a_large_pc1_and_isotropic_states_do_not():
    ctx = fake_context(n_blocks=4, d_model=D)
    dominant = run_planted(EXPERIMENT, ctx, _along(8.0))
    isotropic = run_planted(EXPERIMENT, ctx, _along(0.0))
    assert dominant.metrics["evr_pc1"] > 0.5 > 5 * isotropic.metrics["evr_pc1"]
    assert isotropic.metrics["evr_pc1"] < 0.15
    assert 0.55 < isotropic.metrics["evr_top10"] < 0.8  # about 10 of 16 equal directions
    pts = dominant.frame("pca_unit")
    assert pts.pc1.abs().mean() > 3 * pts.pc2.abs().mean()


def test_point_tables_keep_every_point():
    ctx = fake_context(n_blocks=4, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _along(8.0))
    n_sites = 2 * 4 + 2  # embed, resid_attn and resid_mlp per block, norm_final
    by_pos, by_sample, pts = (r.frame(t) for t in ("pca_by_position", "pca_by_sample", "pca_unit"))
    assert len(by_pos) == n_sites * 31 and by_pos.position.min() == 1
    assert len(by_sample) == n_sites * 24 and set(by_sample["sample"]) == set(range(24))
    assert len(pts) > 500 and pts.position.min() >= 1
    assert set(pts.point) == {"embed", "resid_attn", "resid_mlp", "norm_final"}


def test_charts_are_rebuilt_from_the_stored_json():
    from generator import artifacts

    r = run_planted(EXPERIMENT, fake_context(n_blocks=4, d_model=D), _drift(turn_at=2))
    stored = json.loads(artifacts.dumps({"metrics": r.metrics, "tables": r.tables, "facts": r.facts}))
    again = Result(**stored)
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(again, ChartView("synthetic", 3)).items()}
    assert set(specs) == CHARTS
    small = EXPERIMENT.charts(again, ChartView("synthetic", 3, max_chart_points=40))
    for name in ("pca_unit", "pca_by_position", "pca_by_sample"):
        assert small[name].to_dict()["title"]["subtitle"][0].startswith("40 of ")
    for chart in EXPERIMENT.charts(r, ChartView("synthetic", 3)).values():
        chart.to_dict()
