"""vocab: planted per-token norms with a few outliers must come out in the top and bottom tables."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import fake_context, run_planted

from generator.artifacts import dumps
from generator.experiment import ChartView, Result
from generator.experiments.vocab import EXPERIMENT

N_IDS = 258  # the byte tokenizer's vocabulary
HIGH = {65: 100.0, 120: 90.0, 200: 80.0}  # token id -> planted norm
LOW = {10: 0.01, 66: 0.02, 250: 0.03}


def _planted_norms() -> np.ndarray:
    norms = 1.0 + (np.arange(N_IDS) * 37 % 100) / 100.0  # ordinary tokens: norms in [1, 2)
    for i, v in {**HIGH, **LOW}.items():
        norms[i] = v
    return norms


def _states(norms: np.ndarray):
    """Token id i (its sample id) has norm norms[i] at every site, in a random direction."""
    target = torch.tensor(norms, dtype=torch.float32)

    def make(site, samples, positions):
        g = torch.Generator().manual_seed(int(site.depth) * 1000 + int(samples[0, 0]))
        h = torch.randn(*positions.shape, 16, generator=g)
        return h / h.norm(dim=-1, keepdim=True) * target[samples][..., None]
    return make


def _context(n_blocks: int = 6):
    ctx = fake_context(n_blocks=n_blocks)
    ctx.seq_len["singular"], ctx.n_samples["singular"] = 1, N_IDS  # every id alone
    return ctx


def test_planted_outliers_head_the_tables_and_set_the_ratios():
    norms = _planted_norms()
    params = EXPERIMENT.params(top=3)
    r = run_planted(EXPERIMENT, _context(), _states(norms), params=params)
    high, low = r.tables["highest_norm_tokens"], r.tables["lowest_norm_tokens"]
    assert [row["token_id"] for row in high] == list(HIGH)
    assert [row["token_id"] for row in low] == list(LOW)
    assert high[0]["token"] == "A" and low[1]["token"] == "B"  # ids 65 and 66, as text
    assert [row["mean_norm"] for row in high] == pytest.approx(list(HIGH.values()), rel=1e-5)
    med = float(np.median(norms))
    assert r.metrics["vocab_norm_median"] == pytest.approx(med, rel=1e-5)
    assert r.metrics["vocab_norm_max_over_median"] == pytest.approx(100.0 / med, rel=1e-5)
    assert r.metrics["vocab_norm_min_over_median"] == pytest.approx(0.01 / med, rel=1e-5)
    assert r.metrics["vocab_tokens"] == N_IDS
    hist = r.tables["norm_histogram"]
    assert len(hist) == params.bins and sum(row["tokens"] for row in hist) == N_IDS
    assert hist[0]["norm_from"] == pytest.approx(0.01, rel=1e-4)  # bins in norm units
    assert hist[-1]["norm_to"] == pytest.approx(100.0, rel=1e-4)
    assert all(a["norm_to"] == pytest.approx(b["norm_from"]) for a, b in zip(hist, hist[1:], strict=False))


def test_tokens_in_the_tables_are_visible():
    """Byte tokens decode to control characters or spaces: the tables show them visibly."""
    norms = _planted_norms()
    norms[32], norms[9] = 500.0, 400.0  # " " and "\t" (ByteTokenizer shows <9> for byte 9)
    r = run_planted(EXPERIMENT, _context(), _states(norms), params=EXPERIMENT.params(top=3))
    tokens = [row["token"] for row in r.tables["highest_norm_tokens"]]
    assert tokens[0] == "␣"
    assert all(t.strip() == t and t for t in tokens)


def test_default_params_list_twenty_tokens_each():
    r = run_planted(EXPERIMENT, _context(), _states(_planted_norms()))
    assert len(r.tables["highest_norm_tokens"]) == len(r.tables["lowest_norm_tokens"]) == 20
    assert [row["token_id"] for row in r.tables["highest_norm_tokens"][:3]] == list(HIGH)


def test_charts_are_built_from_the_stored_result():
    r = run_planted(EXPERIMENT, _context(n_blocks=4), _states(_planted_norms()))
    stored = Result(**json.loads(dumps(dataclasses.asdict(r))))  # as the artifact store keeps it
    specs = {k: c.to_dict() for k, c in EXPERIMENT.charts(stored, ChartView("synthetic", 3)).items()}
    assert set(specs) == {"norm_histogram", "extreme_tokens"}
    assert set(EXPERIMENT.paper_figures) <= set(specs)
    hist = specs["norm_histogram"]
    assert "258 token ids" in json.dumps(hist["title"])
    bars = hist["layer"][0]["encoding"]
    assert bars["y"]["scale"]["type"] == "log" and "log scale" in bars["y"]["title"]  # log counts
    assert bars["x"]["scale"]["type"] == "log" and bars["x"]["title"].startswith("mean norm")
    assert "median" in json.dumps(hist)  # the median is marked
    ext = specs["extreme_tokens"]["encoding"]
    assert ext["y"]["title"] == "token (id)" and ext["x"]["scale"]["type"] == "log"
    rows = specs["extreme_tokens"]["datasets"]
    labels = [row["label"] for rows_ in rows.values() for row in rows_]
    assert "A  (id 65)" in labels and len(labels) == 40
    assert ":Q" not in json.dumps([hist, specs["extreme_tokens"]["encoding"]])
