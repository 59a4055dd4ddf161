"""The real embedded model: the paper's effects must hold on it (slow: loads ~100 MB GGUF)."""

import numpy as np
import pytest

from generator import architectures, pipeline
from generator.artifacts import Store
from generator.experiment import registry
from generator.suite import CaptureOptions, Inputs, Suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(smollm2, tmp_path_factory):
    suite = Suite(seed=42, inputs=Inputs(n_samples=6, seq_len=64, batch_size=6),
                  capture=CaptureOptions(points_per_site=60), path="test")
    params = {n: registry()[n].params() for n in ("norms", "attn_vs_mlp")}
    out = tmp_path_factory.mktemp("smol")
    summary = pipeline.Summary()
    pipeline.run_loaded(suite, smollm2, params, {n: n for n in params}, Store(out), summary,
                        progress=False)
    return out, summary


def test_smollm2_is_the_llama_architecture_with_30_blocks(smollm2):
    cfg = smollm2.model.config
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert architectures.for_config(cfg).name == "llama"


def test_position_zero_norm_dominates_in_middle_blocks(results):
    import json

    out, _ = results
    m = json.loads((out / "smollm2-135m/norms/result.json").read_text())["metrics"]
    assert m["pos0_norm_ratio"] > 20  # measured ~96x on 16 x 128 tokens


def test_attention_and_mlp_outputs_are_separable_in_middle_blocks(results):
    import json

    out, _ = results
    m = json.loads((out / "smollm2-135m/attn_vs_mlp/result.json").read_text())["metrics"]
    assert m["attn_mlp_separability"] > 0.9
    assert 0 < m["umap_trustworthiness"] <= 1


def test_capture_on_short_text_checks_every_block(smollm2):
    import torch

    from generator.capture.batch import Batch
    from generator.capture.hooks import Capture
    from generator.capture.sites import all_sites, middle_blocks
    from generator.reducers.norms import NormStats

    ids = torch.tensor([smollm2.tokenizer.encode("The cat sat on the mat and looked at the door.")])
    ns = NormStats(all_sites(30), ids.shape[1])
    cap = Capture(smollm2.model, architectures.for_config(smollm2.model.config), [ns])
    with cap:
        cap.run(Batch(ids, torch.ones_like(ids, dtype=torch.bool), torch.arange(1)))
    assert cap.checks == 30
    mids = middle_blocks(30)
    pos = np.array([ns.mean_pos()[ns.index[("resid_mlp", b)]] for b in mids])
    assert np.median(pos[:, 0] / np.median(pos[:, 1:], axis=1)) > 20


@pytest.mark.parametrize("fraction,grows", [(None, False), (1 / 64, True)])
def test_the_default_heavy_row_reserve_holds_the_real_models_heavy_tokens(smollm2, monkeypatch,
                                                                         fraction, grows):
    """On the suite's own text, SmolLM2's attention and MLP outputs need about 1.9% of their
    tokens as heavy rows of the stratified covariance: the default reserve holds them, so no
    shard of a run is captured twice (the former 1/64 did not, and every run repeated its first
    shard)."""
    from pathlib import Path

    from helpers import spy_regrow

    from generator.bench import suite_reducers
    from generator.executors import capture_shard
    from generator.inputs import build_inputs
    from generator.reducers.covariance import Covariance
    from generator.suite import load_suite

    if fraction is not None:
        monkeypatch.setattr(Covariance, "HEAVY_FRACTION", fraction)
    suite = load_suite(Path(__file__).parents[1] / "suite.toml")
    model = smollm2.model
    text = build_inputs("text", smollm2.tokenizer, suite.inputs, 8192, 49152)
    strat = [r for r in suite_reducers(model, text.n_samples, suite.inputs.seq_len)
             if isinstance(r, Covariance) and r._stratified]
    grown = spy_regrow(monkeypatch)
    capture_shard(model, architectures.for_config(model.config), text, strat, "cpu", 0, 32)
    assert len(strat) == 1 and grown[0] is grows
