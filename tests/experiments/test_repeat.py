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
    traj = r.tables["trajectory"]
    assert len(traj) == 7 * 23  # 6 repeated sequences and the text baseline, positions 1 onward
    assert {row["position"] for row in traj} == set(range(1, 24))
    assert sum(row["kind"] == "text baseline" for row in traj) == 23
    for seq in {row["sequence"] for row in traj}:  # each path marks its first and last position
        ends = {row["end"]: row["position"] for row in traj if row["sequence"] == seq and row["end"]}
        assert ends == {"first": 1, "last": 23}
    assert r.facts["massive_positions"] == []


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


def test_a_massive_text_position_is_left_out_of_the_ratio_and_the_trajectory():
    """Text position 5 planted at 50x: it must neither move the ratio nor enter the PCA."""
    def text(site, samples, positions):
        h = _text(site, samples, positions)
        h[positions == 5] *= 50.0
        return h

    ctx = fake_context(n_blocks=6, d_model=D, seq_len=24, n_samples=6)
    r = _run(ctx, _repeat(scale=3.0, settle_from=6), make_text=text)
    assert r.facts["massive_positions"] == [5]
    assert r.metrics["repeat_norm_over_text"] == pytest.approx(3.0, rel=1e-4)
    assert 5 not in {row["position"] for row in r.tables["trajectory"]}
    norms = [row for row in r.tables["norm_by_position"] if row["position"] == 5]
    assert norms, "the norm chart still shows the position (log scale): only the geometry drops it"
    assert all(row["position"] >= 1 for row in r.tables["norm_by_position"])  # position 0 apart


def test_tokens_are_shown_visibly():
    ctx = fake_context(n_blocks=4, d_model=D, seq_len=12, n_samples=3)
    ctx.input_labels["repeat"] = [" the", "\n", "a\tb"]
    r = _run(ctx, _repeat(scale=2.0, settle_from=4))
    assert [row["token"] for row in r.tables["repeat_tokens"]] == ["␣the", "\\n", "a\\tb"]
    sequences = {row["sequence"] for row in r.tables["trajectory"]}
    assert "repeated “␣the”" in sequences and not any("\n" in s for s in sequences)


def test_charts_are_built_from_the_stored_result():
    ctx = fake_context(n_blocks=4, d_model=D, seq_len=12, n_samples=3)
    r = _run(ctx, _repeat(scale=3.0, settle_from=4))
    stored = Result(**json.loads(dumps(dataclasses.asdict(r))))  # as the artifact store keeps it
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(stored, ChartView("synthetic", 3)).items()}
    assert set(specs) == {"norm_by_position", "trajectory"}
    assert set(EXPERIMENT.paper_figures) <= set(specs)
    text = json.dumps(specs)
    assert "pc1:Q" not in text and "mean_norm:Q" not in text
    traj = specs["trajectory"]
    fields = {(ch, enc.get("field")) for layer in traj["layer"]
              for ch, enc in layer.get("encoding", {}).items() if isinstance(enc, dict)}
    assert ("color", "position") in fields  # the path encodes position
    assert ("strokeDash", "kind") in fields  # repeated tokens vs the text baseline
    for layer in traj["layer"]:
        for axis in ("x", "y"):
            title = layer["encoding"][axis]["title"]
            assert title.startswith("principal component") and "variance" in title
    for spec in specs.values():  # tooltips titled in words, numbers formatted for reading
        for layer in spec.get("layer", [spec]):
            for t in layer["encoding"].get("tooltip", []):
                assert t["title"] and "_" not in t["title"]
                if t["field"] != "sequence":
                    assert t["format"] == ",.6~r"
