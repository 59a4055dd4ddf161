"""attn_vs_mlp: the claim's measure must find a separation planted only in the middle blocks, and
fail where the separation is everywhere (at ceiling), nowhere (one distribution), and on a
randomly initialized model; massive-norm points must be left out of the geometry and named."""

import json

import pytest
import torch
from helpers import fake_context, loaded, run_planted, tiny_gpt2, tiny_llama

from generator.experiment import ChartView, Result
from generator.experiments.attn_vs_mlp import CLAIM, EXPERIMENT, Params

D = 16
N_BLOCKS = 6  # middle blocks 1-4 (the middle 60%), early 0, late 5
PARAMS = Params(umap_points=150, umap_neighbors=10)
CHARTS = {"pca_raw", "pca_unit", "pca_mean_over_samples", "umap", "separability_by_block"}


def _states(where: str, massive_position: int | None = None):
    """Component outputs: 5 x a direction + unit noise. Attention along e0; the MLP along e1
    in the blocks `where` names ("middle", "every", "none"), along e0 (the same distribution as
    attention) elsewhere. With `massive_position`, the middle blocks' MLP output at that position
    gets 300 x a direction of its own (e2): a massive activation."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, D, generator=g)
        apart = {"middle": 1 <= site.block <= 4, "every": True, "none": False}[where]
        h[..., 1 if apart and site.point == "mlp" else 0] += 5.0
        if massive_position is not None and site.point == "mlp" and 1 <= site.block <= 4:
            h[..., 2] += 300.0 * (positions == massive_position)
        return h
    return make


def _run(where: str, massive_position: int | None = None) -> Result:
    return run_planted(EXPERIMENT, fake_context(n_blocks=N_BLOCKS, d_model=D),
                       _states(where, massive_position), PARAMS)


@pytest.fixture(scope="module")
def middle():
    return _run("middle")


def _by_block(r: Result) -> dict[int, dict]:
    return {row["block"]: row for row in r.tables["separability_by_block"]}


def test_separation_planted_in_the_middle_blocks_is_found_there_and_the_claim_holds(middle):
    rows = _by_block(middle)
    assert list(rows) == list(range(N_BLOCKS))
    assert [b for b, row in rows.items() if row["stage"] == "middle"] == [1, 2, 3, 4]
    assert rows[0]["stage"] == "early" and rows[5]["stage"] == "late"
    for b, row in rows.items():
        assert 0.4 < row["shuffled"] < 0.6, (b, row)  # the baseline is chance everywhere
        if row["stage"] == "middle":
            assert row["accuracy"] > 0.97 and row["margin"] > 0.4 and row["silhouette"] > 0.3
        else:
            assert abs(row["margin"]) < 0.1 and abs(row["silhouette"]) < 0.05, (b, row)
    m = middle.metrics
    assert m["attn_mlp_margin_middle"] > 0.4 and abs(m["attn_mlp_margin_early"]) < 0.1
    assert m["attn_mlp_middle_contrast"] > 0.35
    assert m[CLAIM.metric] >= CLAIM.default
    assert CLAIM.threshold == "attn_mlp_separability_min"
    where = CLAIM.where(middle, CLAIM.default)
    assert "middle blocks 1-4" in where and "early blocks 0-0" in where
    assert "4 of 6 blocks" in where


def test_classes_are_balanced_and_every_fold_is_held_out(middle):
    for row in middle.tables["separability_by_block"]:
        assert row["folds"] == 5
        assert 0.8 < row["attn_points"] / row["mlp_points"] < 1.25
        assert row["attn_points"] + row["mlp_points"] > 600  # 4 x 100 per component and block


def test_separation_in_every_block_is_at_ceiling_and_the_claim_fails():
    """What SmolLM2 shows: accuracy near 1 in every block, so nothing is middle-specific."""
    r = _run("every")
    assert all(row["accuracy"] > 0.97 for row in r.tables["separability_by_block"])
    assert r.metrics["attn_mlp_separability"] > 0.97
    assert abs(r.metrics["attn_mlp_middle_contrast"]) < 0.05
    assert r.metrics[CLAIM.metric] < CLAIM.default


def test_one_distribution_for_both_gives_chance_and_the_claim_fails():
    r = _run("none")
    m = r.metrics
    assert 0.4 < m["attn_mlp_separability"] < 0.6 and 0.4 < m["attn_mlp_shuffled"] < 0.6
    assert abs(m["attn_mlp_margin_middle"]) < 0.1
    assert abs(m["attn_mlp_silhouette"]) < 0.05
    assert m[CLAIM.metric] < CLAIM.default


RANDOM = {"llama": lambda: tiny_llama(n_layer=6, hidden=32, seed=1),
          "gpt2": lambda: tiny_gpt2(n_layer=6, n_embd=32, seed=1)}


@pytest.mark.parametrize("family", sorted(RANDOM))
def test_a_randomly_initialized_model_fails_the_claim(tmp_path, family):
    """The control: a random model's outputs are separable in every block (attention outputs
    share one direction whatever the weights), so the contrast stays near zero."""
    from generator import pipeline
    from generator.artifacts import Store
    from generator.suite import CaptureOptions, Inputs, Suite

    suite = Suite(seed=5, inputs=Inputs(n_samples=16, seq_len=48, batch_size=8),
                  capture=CaptureOptions(points_per_site=60), path="test")
    model = loaded(RANDOM[family](), "random")
    pipeline.run_loaded(suite, model, {"attn_vs_mlp": PARAMS}, {"attn_vs_mlp": "k"},
                        Store(tmp_path), pipeline.Summary(), progress=False)
    m = json.loads((tmp_path / "random/attn_vs_mlp/result.json").read_text())["metrics"]
    assert m["attn_mlp_separability"] > 0.9  # separable: accuracy alone would pass
    assert m["attn_mlp_margin_early"] > 0.3 and m["attn_mlp_margin_late"] > 0.3
    assert abs(m[CLAIM.metric]) < CLAIM.default, m


def test_a_massive_position_is_left_out_of_the_geometry_and_named():
    r = _run("middle", massive_position=3)
    raw, unit, umap = (r.frame(t) for t in ("pca_raw", "pca_unit", "umap"))
    for df in (raw, unit, umap):
        assert not ((df.kind == "mlp") & (df.position == 3)).any()
        assert ((df.kind == "attn") & (df.position == 3)).any()  # only the massive points go
    massive = r.frame("massive_points")
    assert set(massive.position) == {3} and set(massive.kind) == {"mlp"}
    assert set(massive.block) == {1, 2, 3, 4} and (massive.times_median > 20).all()
    assert r.metrics["massive_points_left_out"] == len(massive)
    assert r.facts["massive"]["where"].startswith("position 3 (")
    mean = r.frame("pca_mean_over_samples")
    assert not ((mean.kind == "mlp") & (mean.position == 3)).any()
    assert r.facts["mean_massive"] == {"slots": 4, "of": 2 * 4 * 31, "positions": [3]}
    # PC1 still splits attention from MLP: the massive direction did not take it.
    for df in (raw, unit, mean):
        pc1 = df.groupby("kind").pc1
        assert abs(pc1.mean()["attn"] - pc1.mean()["mlp"]) > 3 * pc1.std().max()
    # the separation measure is unchanged by the planted outlier
    assert r.metrics[CLAIM.metric] >= CLAIM.default
    charts = EXPERIMENT.charts(r, ChartView("synthetic", 3))
    sub = " ".join(charts["pca_raw"].to_dict()["title"]["subtitle"])
    assert "massive-norm points left out (position 3 (" in sub
    sub = " ".join(charts["pca_mean_over_samples"].to_dict()["title"]["subtitle"])
    assert "4 massive-norm means left out (position 3)" in sub
    assert any("left out: position 3 (" in n for n in r.notes)


def test_point_tables_keep_middle_points_with_their_labels(middle):
    raw, unit, umap = (middle.frame(t) for t in ("pca_raw", "pca_unit", "umap"))
    assert len(raw) == len(unit) == 100 * 2 * 4  # points_per_site x middle sites
    assert set(raw.block) == {1, 2, 3, 4} and raw.position.min() >= 1
    assert set(raw.kind) == {"attn", "mlp"} and raw.token.map(type).eq(str).all()
    assert {"sample", "position", "token"} <= set(raw.columns)
    assert len(umap) == PARAMS.umap_points
    mean = middle.frame("pca_mean_over_samples")
    assert len(mean) == 2 * 4 * 31  # two kinds x four middle blocks x positions 1-31
    assert middle.facts["blocks"] == [1, 4] and middle.facts["umap_points"] == PARAMS.umap_points
    assert middle.facts["early"] == [0, 0] and middle.facts["late"] == [5, 5]


def _walk(node, key):
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        for v in node.values():
            yield from _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def test_charts_are_rebuilt_from_the_stored_json(middle):
    from generator import artifacts

    stored = json.loads(artifacts.dumps({"metrics": middle.metrics, "tables": middle.tables,
                                         "facts": middle.facts}))
    again = Result(**stored)
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(again, ChartView("synthetic", 3)).items()}
    assert set(specs) == CHARTS
    small = EXPERIMENT.charts(again, ChartView("synthetic", 3, max_chart_points=50))
    assert small["pca_raw"].to_dict()["title"]["subtitle"][0].startswith("50 of ")
    assert "shown" in small["pca_mean_over_samples"].to_dict()["title"]["subtitle"][0]
    for name in ("pca_raw", "pca_unit", "pca_mean_over_samples", "umap"):
        spec = small[name].to_dict()
        params = {p["name"]: p for p in spec["params"]}
        assert params["block_at"]["bind"]["input"] == "range"  # the block slider
        assert (params["block_at"]["bind"]["min"], params["block_at"]["bind"]["max"]) == (1, 4)
        assert params["every_block"]["value"] is True
        assert params["show_kind"]["bind"]["input"] == "select"  # attention / MLP toggle
        scales = [layer["encoding"]["color"]["scale"] for layer in spec["layer"]]
        assert all(sc["domain"] == [1, 4] for sc in scales)  # a block keeps its colour
        assert all(sc["range"][0] not in ("#fff", "#ffffff", "white") for sc in scales)
        assert sum(len(v) for v in spec["datasets"].values()) <= 50
        titles = {t.get("title") for t in _walk(spec, "tooltip") for t in t}
        assert {"token", "sequence position", "sample", "block"} <= titles or name.startswith(
            "pca_mean") and {"sequence position", "block"} <= titles
    sep = specs["separability_by_block"]
    assert len(sep["vconcat"]) == 2  # accuracy and silhouette on their own axes
    y_titles = {y.get("title") for y in _walk(sep, "y") if isinstance(y, dict)}
    assert {"balanced accuracy (held out)", "silhouette (cosine), attention vs MLP"} <= y_titles
    rows = next(iter(sep["datasets"].values()))
    assert {r["series"] for r in rows} == {"held-out accuracy", "same classifier, shuffled labels",
                                           "silhouette (cosine)"}
    shaded = [t for t in _walk(sep, "transform") for t in t if "calculate" in t
              and t.get("as") == "shaded"]
    assert shaded and "middle blocks 1-4" in shaded[0]["calculate"]
    for chart in EXPERIMENT.charts(middle, ChartView("synthetic", 3)).values():
        chart.to_dict()


def test_the_margin_curve_is_offered_to_the_compare_page(middle):
    (comp,) = EXPERIMENT.comparisons
    rows = comp.rows(middle)
    assert [r["block"] for r in rows] == list(range(N_BLOCKS))
    assert rows[2]["value"] > 0.4 > abs(rows[0]["value"])


def test_the_pca_subtitle_says_how_its_covariance_was_summed():
    """Sample rate, kept heavy tokens (raw outputs only) and the products' precision, as the
    run resolved them; facts written before `cov_matmul` existed say nothing about it."""
    from generator.experiments.attn_vs_mlp import _fitted_on

    f = {"cov_every": 8, "cov_keep_above": 3.0, "total_tokens": 1000, "factor": 4.0,
         "cov_matmul": "bfloat16"}
    raw = _fitted_on(f, "raw")
    assert "about 1,000 tokens, estimated from 1 in 8 of them, high-norm tokens kept, " \
        "products in bfloat16" in raw
    assert "1 in 8 of them, products in bfloat16" in _fitted_on(f, "unit")
    exact = _fitted_on({**f, "cov_every": 1, "cov_matmul": "float32"}, "raw")
    assert "all 1,000 tokens (exact covariance)" in exact and "bfloat16" not in exact
    old = {k: v for k, v in f.items() if k != "cov_matmul"}
    assert "bfloat16" not in _fitted_on(old, "raw")
