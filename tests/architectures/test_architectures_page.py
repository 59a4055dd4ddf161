"""What the site says about architectures: the generated page, and points a model does not have.

A parallel block has no mid-block residual. Its `resid_attn` is never captured, experiments
that plot every point leave it out and their page says why, and an experiment told to read it
is "not applicable" with that reason: nothing else is plotted under its name.
"""

import json

import pytest
import tiny_families
from helpers import save_tiny_folder, write_suite

from generator import architectures
from generator import pipeline as runner
from generator.experiment import registry
from generator.site import render
from generator.suite import load_suite

ONLY = ("norms", "positions")
NO_MID = "no mid-block residual (parallel block)"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    models = [{"name": n, "path": str(save_tiny_folder(root / n, tiny_families.build(n)))}
              for n in ("gptj", "gpt_neox-sequential")]
    off = "".join(f"[experiments.{e}]\nenabled = false\n" for e in registry()
                  if e not in ONLY and e != "attn_vs_mlp")
    suite = write_suite(root / "suite.toml", models,
                        extra=off + '[experiments.positions]\npoint = "resid_attn"\n')
    suite.write_text(suite.read_text().replace("[experiments.attn_vs_mlp]",
                                               "[experiments.attn_vs_mlp]\nenabled = false"))
    summary = runner.run(load_suite(suite), root / "artifacts", progress=False)
    render.render(root / "artifacts", root / "docs")
    return root, summary


def test_an_experiment_reading_an_absent_point_is_not_applicable_with_the_reason(rendered):
    root, summary = rendered
    assert summary.skipped == {}
    why = summary.not_applicable["gptj/positions"]
    assert NO_MID in why and "set [experiments.positions] point" in why
    assert "gpt_neox-sequential/positions" in summary.generated
    page = (root / "docs/positions.md").read_text()
    assert "Not shown for gptj:" in page and NO_MID in page


def test_pages_of_a_parallel_model_say_it_has_no_mid_block_residual(rendered):
    root, _ = rendered
    page = (root / "docs/norms.md").read_text().replace("&#95;", "_")
    gptj, neox = page.split("## gpt_neox-sequential")
    assert "## gptj" in gptj and NO_MID in gptj and NO_MID not in neox
    rows = json.loads((root / "artifacts/gptj/norms/norm_by_site.table.json").read_text())
    assert "resid_attn" not in {r["point"] for r in rows}


def test_supported_architectures_page_is_generated_from_the_declarations(rendered):
    root, _ = rendered
    page = (root / "docs/models.md").read_text()
    nav = dict(json.loads((root / "docs" / render.NAV_FILE).read_text()))
    assert nav["Supported architectures"] == "models.md" and "# Supported architectures" in page
    unescape = page.replace("&#95;", "_").replace("&#124;", "|")
    for f in architectures.families():
        assert f"### {f.name}" in unescape and f.formula() in unescape
        assert all(f"<code>{t}</code>" in unescape for t in f.model_types + f.examples)
        for r in f.refusals:
            assert r.reason.split(" ")[0] in unescape
    for words in ("parallel when <code>use_parallel_residual</code>", "sandwich post-norms",
                  "post-norms only", "row = position + 2", "alibi when <code>alibi</code>",
                  NO_MID, "do_layer_norm_before = False", "tiny random model"):
        assert words in unescape, words
