"""pos_embed: a helix planted in GPT-2's learned position table must be found; RoPE models skip,
and a build with no learned table says on the page what it would show and why it is empty."""

import dataclasses
import math

import torch
from helpers import fake_context, tiny_gpt2, tiny_llama

import generator.architectures
from generator.experiment import ChartView
from generator.experiments.pos_embed import EXPERIMENT


def _ctx(model):
    ctx = fake_context(n_blocks=model.config.num_hidden_layers, d_model=model.config.hidden_size)
    return dataclasses.replace(ctx, model=model,
                               architecture=generator.architectures.for_config(model.config))


def _gpt2_with_helix(k1: int = 3, k2: int = 7, massive_row: int | None = None):
    m = tiny_gpt2()
    n, d = m.wpe.weight.shape
    p = torch.arange(n, dtype=torch.float64)
    w = 0.01 * torch.randn(n, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w[:, 0], w[:, 1] = 4 * torch.cos(2 * math.pi * k1 * p / n), 4 * torch.sin(2 * math.pi * k1 * p / n)
    w[:, 2], w[:, 3] = 2 * torch.cos(2 * math.pi * k2 * p / n), 2 * torch.sin(2 * math.pi * k2 * p / n)
    if massive_row is not None:
        w[massive_row, 9] = 200.0
    with torch.no_grad():
        m.wpe.weight.copy_(w.float())
    return m


def _compute(ctx):
    p = EXPERIMENT.params()
    return EXPERIMENT.compute(ctx, p, EXPERIMENT.needs(ctx, p))


def test_planted_helix_in_the_position_table_is_measured():
    ctx = _ctx(_gpt2_with_helix(3, 7))
    assert EXPERIMENT.skip(ctx, EXPERIMENT.params()) is None
    assert EXPERIMENT.needs(ctx, EXPERIMENT.params()) == {}
    r = _compute(ctx)
    m = r.metrics
    assert m["wpe_cycles_pc1"] == 3 and m["wpe_cycles_pc2"] == 3
    assert m["wpe_cycles_pc3"] == 7 and m["wpe_cycles_pc4"] == 7
    assert m["wpe_periodicity"] > 0.95
    claim = EXPERIMENT.claims[0]
    assert m[claim.metric] >= claim.default
    assert set(m) <= set(EXPERIMENT.metrics)
    assert r.facts == {"n_positions": 128, "n_dims": 32, "rows_left_out": [],
                       "massive_rows": [], "outlying_rows": []}
    assert len(r.tables["wpe_by_position"]) == 128
    assert m["wpe_rows_left_out"] == 0 and r.tables["wpe_rows_left_out"] == []


def test_a_massive_row_is_reported_and_left_out_of_the_fit():
    r = _compute(_ctx(_gpt2_with_helix(3, 7, massive_row=0)))
    m = r.metrics
    assert r.facts["rows_left_out"] == [0] and m["wpe_rows_left_out"] == 1
    row = r.tables["wpe_rows_left_out"][0]
    assert row["norm_times_median"] > 20 and row["why"] == "massive norm"
    assert [row["position"] for row in r.tables["wpe_by_position"]] == list(range(1, 128))
    assert m["wpe_cycles_pc1"] == 3 and m["wpe_cycles_pc3"] == 7  # the helix, not the row
    assert m["wpe_pc1_top_share"] < 0.05
    sub = EXPERIMENT.charts(r, ChartView("synthetic", 3))["wpe_pairs"].to_dict()["title"]
    assert "massive-norm row 0 left out (listed in the table below)" in sub["subtitle"]


def test_the_untrained_table_is_not_periodic():
    r = _compute(_ctx(tiny_gpt2()))
    assert r.metrics["wpe_periodicity"] < EXPERIMENT.claims[0].default


def test_rotary_models_are_not_applicable():
    ctx = _ctx(tiny_llama())
    reason = EXPERIMENT.skip(ctx, EXPERIMENT.params())
    assert reason == ("synthetic uses rotary position embeddings (RoPE): there is no learned "
                      "position table to analyse")


def test_charts_are_built_from_the_stored_tables():
    r = _compute(_ctx(_gpt2_with_helix()))
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(r, ChartView("synthetic", 3)).items()}
    assert set(specs) == {"wpe_pairs", "wpe_curves"}


def test_a_build_without_a_learned_table_says_what_the_page_would_show(tiny_folders, tmp_path):
    """Only a rotary model: the pos_embed page carries the empty note, with the paper's pointer;
    a page with a result does not."""
    from helpers import only_experiments, write_suite

    from generator import pipeline
    from generator.site import render
    from generator.suite import load_suite

    suite = only_experiments(write_suite(tmp_path / "suite.toml", [
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"])}]), ("pos_embed", "norms"))
    pipeline.run(load_suite(suite), tmp_path / "artifacts", progress=False)
    render.render(tmp_path / "artifacts", tmp_path / "docs")
    page = (tmp_path / "docs/pos_embed.md").read_text()
    assert '<div class="atlas-empty" markdown>' in page
    assert "No model in this build has a learned position table" in page
    assert "[arXiv 2511.21594](https://arxiv.org/abs/2511.21594)" in page
    assert "helix" in page and "Not shown for tiny-llama" in page
    assert "atlas-empty" not in (tmp_path / "docs/norms.md").read_text()
