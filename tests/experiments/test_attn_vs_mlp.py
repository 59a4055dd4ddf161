"""attn_vs_mlp: attention and MLP outputs planted around two directions must be found separable
in every block, and outputs drawn from one distribution must not."""

import json

import pytest
import torch
from helpers import fake_context, run_planted

from generator.experiment import ChartView, Result
from generator.experiments.attn_vs_mlp import EXPERIMENT, Params

D = 16
PARAMS = Params(umap_points=150, umap_neighbors=10)
CHARTS = {"pca_raw", "pca_unit", "pca_mean_over_samples", "umap", "separability_by_block"}


def _states(separated: bool):
    """Component outputs: 5 x a direction + unit noise; attention along e0, MLP along e1 (or e0)."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, D, generator=g)
        axis = 1 if separated and site.point == "mlp" else 0
        h[..., axis] += 5.0
        return h
    return make


@pytest.fixture(scope="module")
def separated():
    ctx = fake_context(n_blocks=5, d_model=D)  # middle blocks: 1-3
    return run_planted(EXPERIMENT, ctx, _states(separated=True), PARAMS)


@pytest.fixture(scope="module")
def mixed():
    ctx = fake_context(n_blocks=5, d_model=D)
    return run_planted(EXPERIMENT, ctx, _states(separated=False), PARAMS)


def test_planted_directions_are_separable_and_the_claim_passes(separated):
    r = separated
    assert r.metrics["attn_mlp_separability"] > 0.97
    assert r.metrics["attn_mlp_silhouette"] > 0.3
    claim = EXPERIMENT.claims[0]
    assert r.metrics[claim.metric] >= claim.default
    rows = r.tables["separability_by_block"]
    assert [row["block"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["block"] for row in rows if row["middle"]] == [1, 2, 3]
    assert all(row["accuracy"] > 0.95 for row in rows)


def test_one_distribution_for_both_gives_chance_and_the_claim_fails(mixed):
    r = mixed
    assert 0.35 < r.metrics["attn_mlp_separability"] < 0.65
    assert abs(r.metrics["attn_mlp_silhouette"]) < 0.05
    claim = EXPERIMENT.claims[0]
    assert r.metrics[claim.metric] < claim.default


def test_point_tables_keep_every_middle_point_and_pc1_splits_the_kinds(separated):
    r = separated
    raw, unit, umap = (r.frame(t) for t in ("pca_raw", "pca_unit", "umap"))
    assert len(raw) == len(unit) > 300  # every reservoir row of blocks 1-3 past position 0
    assert set(raw.block) == {1, 2, 3} and raw.position.min() >= 1
    assert set(raw.kind) == {"attn", "mlp"} and raw.token.map(type).eq(str).all()
    assert len(umap) == PARAMS.umap_points
    for df in (raw, unit):
        pc1 = df.groupby("kind").pc1
        assert abs(pc1.mean()["attn"] - pc1.mean()["mlp"]) > 5 * pc1.std().max()
    mean = r.frame("pca_mean_over_samples")
    assert len(mean) == 2 * 3 * 31  # two kinds x three middle blocks x positions 1-31
    assert r.facts["blocks"] == [1, 3] and r.facts["umap_points"] == PARAMS.umap_points


def test_charts_are_rebuilt_from_the_stored_json(separated):
    from generator import artifacts

    stored = json.loads(artifacts.dumps({"metrics": separated.metrics, "tables": separated.tables,
                                         "facts": separated.facts}))
    again = Result(**stored)
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(again, ChartView("synthetic", 3)).items()}
    assert set(specs) == CHARTS
    small = EXPERIMENT.charts(again, ChartView("synthetic", 3, max_chart_points=50))
    title = small["pca_raw"].to_dict()["title"]
    assert title["subtitle"][0].startswith("50 of ")
    assert "shown" in small["pca_mean_over_samples"].to_dict()["title"]["subtitle"][0]
    for chart in EXPERIMENT.charts(separated, ChartView("synthetic", 3)).values():
        chart.to_dict()
