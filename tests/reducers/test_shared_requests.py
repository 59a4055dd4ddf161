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
