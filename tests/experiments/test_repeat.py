"""repeat: planted repeated-sequence states k times as large as text, settling on one direction."""

import dataclasses
import json

import pytest
import torch
from helpers import fake_context, feed

from generator.artifacts import dumps
from generator.experiment import ChartView, Result
from generator.experiments.repeat import EXPERIMENT

D = 16


def _unit_noise(site, samples, positions):
    g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
    h = torch.randn(*positions.shape, D, generator=g)
    return h / h.norm(dim=-1, keepdim=True)


def _text(site, samples, positions):
    """Text: random directions, norm exactly 1 at every token."""
    return _unit_noise(site, samples, positions)


def _repeat(scale: float, settle_from: int | None, pos0: float = 10.0):
    """Repeats: norm exactly `scale` (position 0: `pos0 * scale`); from `settle_from` on, every
    site points (up to a little noise) along one direction fixed per sequence."""
    def make(site, samples, positions):
        h = _unit_noise(site, samples, positions)
        if settle_from is not None:
            fixed = torch.stack([torch.randn(D, generator=torch.Generator().manual_seed(int(s)))
                                 for s in samples[:, 0]])  # (B, D): one direction per sequence
            late = fixed[:, None, :] + 0.05 * h
            late = late / late.norm(dim=-1, keepdim=True)
            h = torch.where((positions >= settle_from)[..., None], late, h)
        h = h * scale
        h[positions == 0] *= pos0
        return h
    return make


def _run(ctx, make_repeat, make_text=_text):
    params = EXPERIMENT.params()
    needs = EXPERIMENT.needs(ctx, params)
    assert set(needs) == set(EXPERIMENT.modes)
    for mode, make in (("repeat", make_repeat), ("text", make_text)):
        feed(list(needs[mode].values()), ctx.n_blocks, ctx.n_samples[mode], ctx.seq_len[mode], make)
    return EXPERIMENT.compute(ctx, params, needs)


def test_planted_norm_multiple_and_settling_are_measured():
    ctx = fake_context(n_blocks=6, d_model=D, seq_len=24, n_samples=6)
    r = _run(ctx, _repeat(scale=3.0, settle_from=6))
    assert r.metrics["repeat_norm_over_text"] == pytest.approx(3.0, rel=1e-4)
    assert r.metrics["repeat_late_cosine"] > 0.98
    rows = r.tables["repeat_tokens"]
    assert [row["token"] for row in rows] == ctx.input_labels["repeat"]
    for row in rows:
        assert row["norm_vs_text"] == pytest.approx(3.0, rel=1e-4)
        assert row["late_cosine"] > 0.98
        assert row["pos0_norm"] == pytest.approx(30.0, rel=1e-4)  # position 0 kept apart
    assert len(r.tables["trajectory"]) == 6 * 23  # positions 1 onward
    assert min(row["position"] for row in r.tables["trajectory"]) == 1


def test_states_that_never_settle_give_a_low_late_cosine():
    ctx = fake_context(n_blocks=6, d_model=D, seq_len=24, n_samples=6)
    r = _run(ctx, _repeat(scale=0.5, settle_from=None))
    assert r.metrics["repeat_norm_over_text"] == pytest.approx(0.5, rel=1e-4)
    assert abs(r.metrics["repeat_late_cosine"]) < 0.3


def test_settling_only_after_the_middle_position_is_not_counted():
    ctx = fake_context(n_blocks=6, d_model=D, seq_len=24, n_samples=6)
    # the cosine compares the middle and the last position: settling after the middle is missed
    r = _run(ctx, _repeat(scale=2.0, settle_from=20))
    assert abs(r.metrics["repeat_late_cosine"]) < 0.3


def test_charts_are_built_from_the_stored_result():
    ctx = fake_context(n_blocks=4, d_model=D, seq_len=12, n_samples=3)
    r = _run(ctx, _repeat(scale=3.0, settle_from=4))
    stored = Result(**json.loads(dumps(dataclasses.asdict(r))))  # as the artifact store keeps it
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(stored, ChartView("synthetic", 3)).items()}
    assert set(specs) == {"norm_by_position", "trajectory"}
