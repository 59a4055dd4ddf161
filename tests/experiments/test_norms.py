"""norms: planted spikes must be found in the blocks and positions where they were planted.

Position 0 and any other massive position are reported on their own; the claim reads the
per-block ratio, says where it holds, and fails where a pooled number would have passed.
"""

import json
import re

import numpy as np
import pytest
import torch
from helpers import fake_context, run_planted

from generator.analysis import outliers
from generator.experiment import ChartView
from generator.experiments.norms import CLAIM, EXPERIMENT, pos0_where


def _states(spike: float, from_block: int, extra: dict[int, tuple[float, int]] | None = None):
    """Noise of norm about 4 everywhere; position 0 times `spike` from block `from_block` on;
    `extra` plants other massive positions: {position: (factor, from block)}."""
    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, 16, generator=g)
        if site.block >= from_block:
            h[positions == 0] *= spike
        for q, (factor, start) in (extra or {}).items():
            if site.block >= start:
                h[positions == q] *= factor
        return h
    return make


def _by_block(r, field="ratio"):
    return {row["block"]: row[field] for row in r.tables["pos0_ratio_by_block"]}


def test_planted_position0_spike_is_measured():
    ctx = fake_context(n_blocks=6)
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=0))
    assert 40 < r.metrics["pos0_norm_ratio"] < 60
    assert 40 < r.metrics["pos0_norm_ratio_median_middle"] < 60
    assert 40 < r.metrics["pos0_norm_ratio_min_middle"] < 60
    assert all(40 < v < 60 for v in _by_block(r).values())
    assert r.metrics["pos0_massive_fraction_middle"] == 1.0
    assert r.metrics["pos0_massive_from_block"] == 0
    assert set(r.metrics) == set(EXPERIMENT.metrics)


def test_no_spike_reports_nothing_massive_and_the_claim_fails():
    """The control: the same statistic on unremarkable data stays near 1 and fails the claim."""
    ctx = fake_context(n_blocks=6)
    r = run_planted(EXPERIMENT, ctx, _states(spike=1.0, from_block=0))
    m = r.metrics
    assert 0.7 < m["pos0_norm_ratio"] < 1.3
    assert 0.7 < m[CLAIM.metric] < 1.3 and m[CLAIM.metric] < CLAIM.default
    assert m["massive_positions"] == 0 and r.tables["massive_positions"] == []
    assert r.facts["massive_positions"] == []
    assert m["pos0_massive_fraction_middle"] == 0 and np.isnan(m["pos0_massive_from_block"])
    assert not any(row["massive"] for row in r.tables["norm_by_position"])
    assert pos0_where(r, CLAIM.default).startswith("0 of 4 middle blocks (1-4, 0%) reach 10x")
    # the baseline: an ordinary position sits a little above the median, far below the threshold
    assert 1.0 < m["pos0_baseline_ratio_middle"] < 1.5


def test_per_block_claim_fields_follow_a_planted_onset():
    """8 blocks, middle 1-5; position 0 spiked from block 3: 3 of 5 middle blocks, from 3."""
    ctx = fake_context(n_blocks=8)
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=3))
    assert r.facts["middle_blocks"] == [1, 5]
    ratios = _by_block(r)
    assert all(ratios[b] < 1.5 for b in (0, 1, 2)) and all(ratios[b] > 40 for b in range(3, 8))
    assert r.metrics["pos0_massive_fraction_middle"] == pytest.approx(3 / 5)
    assert r.metrics["pos0_massive_from_block"] == 3
    assert r.metrics[CLAIM.metric] > 40  # the median middle block is spiked
    where = pos0_where(r, 10.0)
    assert where.startswith("3 of 5 middle blocks (1-5, 60%) reach 10x: blocks 3-5 "
                            "(first: block 3); outside them, blocks 6-7")
    assert "Baseline: an ordinary position" in where


def test_a_pooled_ratio_above_threshold_does_not_pass_when_few_blocks_hold():
    """Spiked in 2 of 5 middle blocks: the pooled profile is well above 10x, the claim fails."""
    ctx = fake_context(n_blocks=8)
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=4))
    assert r.metrics["pos0_norm_ratio"] > CLAIM.default  # the old, pooled number would pass
    assert r.metrics[CLAIM.metric] < 1.5 < CLAIM.default
    assert pos0_where(r, 10.0).startswith("2 of 5 middle blocks (1-5, 40%) reach 10x: blocks 4-5")


def test_a_planted_massive_position_3_is_detected_and_reported_with_its_onset():
    ctx = fake_context(n_blocks=8)  # middle 1-5
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=0, extra={3: (20.0, 2)}))
    assert r.facts["massive_positions"] == [0, 3]
    assert r.metrics["massive_positions"] == 2
    rows = {row["position"]: row for row in r.tables["massive_positions"]}
    assert set(rows) == {0, 3}
    p3 = rows[3]
    assert p3["first_block"] == 2 and p3["massive_from_block"] == 2
    assert p3["middle_blocks_massive"] == 4 and p3["peak_norm"] > 40
    assert 12 < p3["times_median"] < 20  # 20x in 4 of the 5 middle blocks pooled
    assert rows[0]["first_block"] == 0 and rows[0]["times_median"] > 40
    flagged = [row["position"] for row in r.tables["norm_by_position"] if row["massive"]]
    assert flagged == [0, 3]
    # position 3 is the largest other position in the blocks where it is planted, not before
    assert _by_block(r, "max_other_position")[4] == 3
    assert _by_block(r, "max_other_position")[1] != 3


def test_the_verdict_agrees_with_the_measurement_and_threshold():
    """claims_for compares the claim's metric with the suite threshold and adds where it holds."""
    from generator.site.findings import Entry, Model, claims_for

    ctx = fake_context(n_blocks=8)
    r = run_planted(EXPERIMENT, ctx, _states(spike=50.0, from_block=3))
    r = type(r)(metrics=r.metrics, tables=json.loads(json.dumps(r.tables, default=_plain)),
                facts=r.facts)  # as read back from the stored files
    model = Model("synthetic", "ok", "", "", "", {"norms": Entry(None, "ok", r, {}, {})})
    value = r.metrics[CLAIM.metric]
    for t, verdict in ((10.0, "holds"), (value * 1.01, "does not hold")):
        (c,) = claims_for(model, {CLAIM.threshold: t})
        assert c["verdict"] == verdict
        assert c["where"] == pos0_where(r, t)
    (c,) = claims_for(model, {CLAIM.threshold: 10.0})
    assert "3 of 5 middle blocks" in c["where"]


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def test_charts_are_built_from_the_stored_tables_with_one_dataset_and_worded_axes():
    r = run_planted(EXPERIMENT, fake_context(n_blocks=8),
                    _states(50.0, 3, extra={3: (20.0, 2)}))
    charts = EXPERIMENT.charts(r, ChartView("synthetic", 3, thresholds={CLAIM.threshold: 25.0}))
    specs = {k: c.to_dict() for k, c in charts.items()}
    assert set(specs) == {"norm_by_depth", "norm_by_position", "pos0_ratio_by_block"}
    for name, spec in specs.items():
        assert len(spec.get("datasets", {})) == 1, name  # chart_files keeps one table
        for channel, enc in _encodings(spec):
            assert enc.get("title"), (name, channel, enc)
            assert enc["title"] != enc["field"] or enc["field"].isalpha(), (name, channel, enc)
            assert not re.search(r":[QNOT]\b", str(enc["title"])), (name, channel, enc)
    depth = json.dumps(specs["norm_by_depth"])
    assert "capture-point" not in depth and '"field": "depth"' not in depth
    assert "position 0" in depth and "median position" in depth
    ratio = json.dumps(specs["pos0_ratio_by_block"])
    assert '{"calculate": "25.0", "as": "threshold"}' in ratio  # the suite's threshold is drawn
    assert '{"calculate": "0.5", "as": "start"}' in ratio  # middle blocks 1-5 shaded
    assert '{"calculate": "5.5", "as": "end"}' in ratio
    sub = " ".join(specs["norm_by_position"]["title"]["subtitle"])
    assert f"above {outliers.FACTOR:g}x" in sub and "3 (" in sub


def _encodings(node, channels=("x", "y", "color")):
    """Every (channel, encoding) with a field under x, y or color anywhere in a spec."""
    if isinstance(node, dict):
        enc = node.get("encoding", {})
        for c in channels:
            if isinstance(enc.get(c), dict) and "field" in enc[c]:
                yield c, enc[c]
        for v in node.values():
            yield from _encodings(v, channels)
    elif isinstance(node, list):
        for v in node:
            yield from _encodings(v, channels)


def test_the_compare_page_gets_position_0_and_the_baseline_per_block():
    r = run_planted(EXPERIMENT, fake_context(n_blocks=8), _states(50.0, 3))
    comps = {c.name: c for c in EXPERIMENT.comparisons}
    rows = comps["pos0_ratio"].rows(r)
    zero = {q["block"]: q["value"] for q in rows if q["series"] == "position 0"}
    base = {q["block"]: q["value"] for q in rows if q["series"] != "position 0"}
    assert sorted(zero) == sorted(base) == list(range(8))
    assert zero[2] < 1.5 < 40 < zero[3] and all(v < 1.5 for v in base.values())
    growth = comps["resid_growth"].rows(r)  # residual over embedding, position 0 apart
    assert {q["series"] for q in growth} == {"position 0", "other positions (median)"}
    assert sorted({q["block"] for q in growth}) == list(range(8))
