"""Experiments that ask for the same statistic share one reducer: its work is done once."""

import json

from helpers import tiny_gpt2

from generator import architectures
from generator.experiment import Context, registry
from generator.reducers.states import share_identical
from generator.suite import CaptureOptions


def _needs(model):
    adapter = architectures.for_config(model.config)
    ctx = Context("t", adapter.n_blocks(model), int(model.config.hidden_size), 42,
                  {"text": 16, "repeat": 8, "singular": 1}, {"text": 4, "repeat": 1, "singular": 1},
                  None, model, adapter, CaptureOptions(), input_labels={"repeat": ["x"]},
                  valid_tokens={"text": 64})
    return [exp.needs(ctx, p) for exp in registry().values()
            if exp.skip(ctx, p := exp.params()) is None]


def test_the_default_suite_computes_each_statistic_once():
    needs = _needs(tiny_gpt2(n_layer=4))
    asked = [(mode, json.dumps(r.config(), sort_keys=True))
             for need in needs for mode, named in need.items() for r in named.values()]
    assert len(set(asked)) < len(asked)  # the suite does ask twice for something
    sinks = share_identical(needs)
    for mode, rs in sinks.items():
        configs = [json.dumps(r.config(), sort_keys=True) for r in rs]
        assert len(configs) == len(set(configs)), mode  # each statistic once per capture
        assert sorted(configs) == sorted({c for m, c in asked if m == mode})
    for need in needs:  # every experiment reads a reducer that is captured
        for mode, named in need.items():
            assert all(any(r is s for s in sinks[mode]) for r in named.values())


def test_every_covariance_multiplies_in_the_precision_the_run_resolved(monkeypatch):
    """`capture.cov_matmul` reaches every covariance of the suite, `auto` resolved for the
    capture device (the same value for all, so shared statistics stay shared), and the facts a
    page prints come from the same resolution."""
    import torch

    from generator.inputs import TokenInputs
    from generator.models import LoadedModel, ModelSpec
    from generator.pipeline import context
    from generator.reducers.covariance import Covariance
    from generator.suite import Suite

    model = tiny_gpt2(n_layer=4)

    def covariances(choice):
        suite = Suite(capture=CaptureOptions(cov_matmul=choice))
        loaded = LoadedModel(spec=ModelSpec(name="t"), model=model, tokenizer=None)
        shapes = {"text": (4, 16), "repeat": (1, 8), "singular": (1, 1)}
        token_inputs = {m: TokenInputs(m, torch.zeros(n, t, dtype=torch.long),
                                       torch.ones(n, t, dtype=torch.bool), 4, labels=["x"])
                        for m, (n, t) in shapes.items()}
        ctx = context(suite, loaded, token_inputs, "cpu")  # as the pipeline makes it
        needs = [exp.needs(ctx, p) for exp in registry().values()
                 if exp.skip(ctx, p := exp.params()) is None]
        found = [r for need in needs for named in need.values() for r in named.values()
                 if isinstance(r, Covariance)]
        assert len(found) >= 3  # attn_vs_mlp's raw and unit, layerwise's unit
        return {r.params["matmul_dtype"] for r in found}, ctx

    for choice in ("float32", "bfloat16"):
        assert covariances(choice)[0] == {choice}
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=native: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        dtypes, ctx = covariances("auto")
        assert dtypes == {want} and ctx.cov_matmul == want
