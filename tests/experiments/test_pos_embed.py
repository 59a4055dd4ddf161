"""pos_embed: a helix planted in GPT-2's learned position table must be found; RoPE models skip."""

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


def _gpt2_with_helix(k1: int = 3, k2: int = 7):
    m = tiny_gpt2()
    n, d = m.wpe.weight.shape
    p = torch.arange(n, dtype=torch.float64)
    w = 0.01 * torch.randn(n, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w[:, 0], w[:, 1] = 4 * torch.cos(2 * math.pi * k1 * p / n), 4 * torch.sin(2 * math.pi * k1 * p / n)
    w[:, 2], w[:, 3] = 2 * torch.cos(2 * math.pi * k2 * p / n), 2 * torch.sin(2 * math.pi * k2 * p / n)
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
    assert r.facts == {"n_positions": 128, "n_dims": 32}
    assert len(r.tables["wpe_by_position"]) == 128


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
