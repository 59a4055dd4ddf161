"""layerwise: a residual stream that turns at a planted block, or lies along one direction, must
show the turn in the centroid steps and the direction in PC1; a massive position 0 that jumps at
another block must be its own series and move neither the other positions' curve nor the PCA."""

import json
import math

import torch
from helpers import fake_context, run_planted

from generator.experiment import ChartView, Result
from generator.experiments.layerwise import EXPERIMENT

D = 16
CHARTS = {"pca_unit", "pca_by_position", "pca_by_sample", "centroid_step"}


def _drift(turn_at: int, pos0_jump_at: int | None = None, massive: int | None = None):
    """Residual states 6 x a direction in the e0-e1 plane + unit noise: the direction turns 0.1
    rad per block, and a quarter turn more from block `turn_at` on.

    With `pos0_jump_at`, position 0 is massive (norm 500 along e2, as in trained models) and
    jumps to e3 with norm 20,000 from that block on. With `massive`, that position is 300 x e4
    in every block (a massive position other than 0)."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, D, generator=g)
        angle = 0.1 * (site.block + 1) + (math.pi / 2 if site.block >= turn_at else 0.0)
        h[..., 0] += 6 * math.cos(angle)
        h[..., 1] += 6 * math.sin(angle)
        if pos0_jump_at is not None and site.block >= 0:
            at0 = positions == 0
            jumped = site.block >= pos0_jump_at
            h[..., 3 if jumped else 2] += (20_000.0 if jumped else 500.0) * at0
        if massive is not None and site.block >= 0:
            h[..., 4] += 300.0 * (positions == massive)
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


def _steps(r: Result, series: str) -> dict[int, float]:
    return {row["block"]: row["cosine_distance"] for row in r.tables["centroid_steps"]
            if row["series"] == series}


def test_the_block_that_turns_the_stream_has_the_largest_centroid_step():
    ctx = fake_context(n_blocks=6, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _drift(turn_at=4))
    assert r.metrics["centroid_step_max_block"] == 4
    steps = _steps(r, "other positions")
    assert list(steps) == [0, 1, 2, 3, 4, 5]  # embed -> block 0, then block to block
    assert steps[4] > 0.8
    assert all(v < 0.05 for b, v in steps.items() if b != 4)
    assert 0.1 < r.metrics["centroid_step_mean"] < 0.25
    assert {row["series"] for row in r.tables["centroid_steps"]} == {"position 0",
                                                                     "other positions"}


def test_a_massive_position_0_is_its_own_series_and_does_not_move_the_others():
    """Position 0 jumps at block 2 (norm 500 -> 20,000, a new direction); the stream turns at 4.
    Pooled, position 0 would put the largest step at block 2."""
    ctx = fake_context(n_blocks=6, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _drift(turn_at=4, pos0_jump_at=2))
    assert r.metrics["centroid_step_max_block"] == 4
    assert r.metrics["pos0_step_max_block"] == 2
    others, zero = _steps(r, "other positions"), _steps(r, "position 0")
    assert others[2] < 0.05 and others[4] > 0.8
    assert zero[2] > 0.9
    assert r.facts["massive_positions"] == [0]
    pts = r.frame("pca_unit")
    assert pts.position.min() >= 1


def test_another_massive_position_is_named_left_out_and_drawn_apart():
    ctx = fake_context(n_blocks=6, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _drift(turn_at=4, massive=5))
    assert r.facts["massive_positions"] == [0, 5]
    assert {row["series"] for row in r.tables["centroid_steps"]} == {
        "position 0", "position 5", "other positions"}
    assert r.metrics["centroid_step_max_block"] == 4
    pts, by_pos = r.frame("pca_unit"), r.frame("pca_by_position")
    assert 5 not in set(pts[pts.block >= 0].position)  # the states sampled at position 5 went
    assert 5 in set(pts[pts.block < 0].position)  # the embedding is not massive there
    assert not ((by_pos.position == 5) & (by_pos.block >= 0)).any()
    left = r.frame("massive_points")
    assert set(left.position) == {5} and (left.times_median > 20).all()
    assert r.metrics["massive_points_left_out"] == len(left)
    assert r.facts["massive"]["where"].startswith("position 5 (")
    assert any("positions 0, 5 are each their own series" in n for n in r.notes)
    gone = r.facts["mean_massive"]["by_position"]
    assert gone["positions"] == [5] and gone["slots"] == 2 * 6 + 1  # every site but the embed
    # the massive direction (e4) is not what the PCA's first two components found
    fit_pc = pts[["pc1", "pc2"]].abs().max()
    assert fit_pc.max() < 3
    charts = EXPERIMENT.charts(r, ChartView("synthetic", 3))
    sub = " ".join(charts["pca_unit"].to_dict()["title"]["subtitle"])
    assert "massive-norm states left out (position 5 (" in sub
    sub = " ".join(charts["pca_by_position"].to_dict()["title"]["subtitle"])
    assert "13 massive-norm means left out (position 5)" in sub


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
    assert {"sample", "token"} <= set(pts.columns)


def test_the_mean_over_positions_leaves_position_0_out():
    """Position 0 at 20,000 would be most of every per-sample mean; it must not enter them."""
    ctx = fake_context(n_blocks=4, d_model=D)
    r = run_planted(EXPERIMENT, ctx, _drift(turn_at=10, pos0_jump_at=0))
    assert EXPERIMENT.needs(ctx, EXPERIMENT.params())["text"]["by_sample"].min_position == 1
    by_sample = r.frame("pca_by_sample")
    same = run_planted(EXPERIMENT, ctx, _drift(turn_at=10)).frame("pca_by_sample")
    assert (by_sample[["pc1", "pc2"]] - same[["pc1", "pc2"]]).abs().max().max() < 0.05


def _walk(node, key):
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        for v in node.values():
            yield from _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def test_charts_are_rebuilt_from_the_stored_json():
    from generator import artifacts

    r = run_planted(EXPERIMENT, fake_context(n_blocks=4, d_model=D),
                    _drift(turn_at=2, pos0_jump_at=1))
    stored = json.loads(artifacts.dumps({"metrics": r.metrics, "tables": r.tables, "facts": r.facts}))
    again = Result(**stored)
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(again, ChartView("synthetic", 3)).items()}
    assert set(specs) == CHARTS
    small = EXPERIMENT.charts(again, ChartView("synthetic", 3, max_chart_points=40))
    for name in ("pca_unit", "pca_by_position", "pca_by_sample"):
        spec = small[name].to_dict()
        assert spec["title"]["subtitle"][0].startswith("40 of ")
        slider = {p["name"]: p for p in spec["params"]}["block_at"]["bind"]
        assert (slider["input"], slider["min"], slider["max"]) == ("range", -1, 4)
        assert spec["encoding"]["color"]["scale"]["domain"] == [-1, 4]
        assert sum(len(v) for v in spec["datasets"].values()) <= 40
    tips = {t.get("title") for t in _walk(specs["pca_unit"], "tooltip") for t in t}
    assert {"capture point", "block", "sequence position", "sample", "token"} <= tips
    steps = specs["centroid_step"]
    assert len(steps["vconcat"]) == 2
    rows = next(iter(steps["datasets"].values()))
    assert {row["series"] for row in rows} == {"position 0", "other positions"}
    xs = {x.get("title") for x in _walk(steps, "x") if isinstance(x, dict)}
    assert all(t and t.startswith("block") for t in xs)
    for chart in EXPERIMENT.charts(r, ChartView("synthetic", 3)).values():
        chart.to_dict()


def test_the_centroid_curves_are_offered_to_the_compare_page():
    r = run_planted(EXPERIMENT, fake_context(n_blocks=6, d_model=D),
                    _drift(turn_at=4, pos0_jump_at=2))
    (comp,) = EXPERIMENT.comparisons
    rows = comp.rows(r)
    assert {row["series"] for row in rows} == {"position 0", "other positions"}
    assert max((row for row in rows if row["series"] == "other positions"),
               key=lambda row: row["value"])["block"] == 4


def test_the_pca_subtitle_says_how_its_covariance_was_summed():
    """The page states the sample rate and the products' precision behind the fit, as resolved
    for the run (`capture.cov_every`, `capture.cov_matmul`), and only what applies."""
    for every, matmul, said, unsaid in (
            (8, "bfloat16", ["about", "estimated from 1 in 8 of them, products in bfloat16"], []),
            (1, "float32", ["PCA fitted on all"], ["1 in", "bfloat16", "about"])):
        ctx = fake_context(n_blocks=4, d_model=D, cov_every=every, cov_matmul=matmul)
        r = run_planted(EXPERIMENT, ctx, _along(3.0))
        assert (r.facts["cov_every"], r.facts["cov_matmul"]) == (every, matmul)
        sub = " ".join(EXPERIMENT.charts(r, ChartView("synthetic", 3))["pca_unit"]
                       .to_dict()["title"]["subtitle"])
        assert all(s in sub for s in said) and not any(s in sub for s in unsaid), sub
