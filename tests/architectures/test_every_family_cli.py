"""Every declared family and config variant, as a saved tiny random model, through the real CLI.

One suite lists them all and one `generator run --strict` builds it (one process: the imports
and the UMAP warm-up are paid once). Nothing may be skipped: a declaration that does not match
its model fails its residual check and the model is skipped, which `--strict` turns into exit 1.
"""

import json

import pytest
import tiny_families
from helpers import save_tiny_folder, write_suite

from generator import cli
from generator import models as model_loading
from generator.experiment import registry

LEARNED = {"gpt2", "gpt_neo", "opt"}


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    entries = [{"name": name, "path": str(save_tiny_folder(root / name, tiny_families.build(name)))}
               for name in tiny_families.VARIANTS]
    suite = write_suite(root / "suite.toml", entries)
    suite.write_text(suite.read_text().replace("n_samples = 6", "n_samples = 4").replace(
        "max_tokens = 64", "max_tokens = 32").replace("umap_points = 200", "umap_points = 60"))
    loaded, real_load = {}, model_loading.load

    def spy(spec, *args, **kwargs):  # keeps each loaded model, and its hook count before capture
        lm = real_load(spec, *args, **kwargs)
        loaded[spec.name] = (lm.model, _hooks(lm.model))
        return lm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_loading, "load", spy)
        code = cli.main(["run", "--suite", str(suite), "--out", str(root / "out"), "--strict",
                         "--no-progress"])
    summary = json.loads((root / "out/summary.json").read_text())
    return root / "out", code, summary, loaded


def test_every_family_runs_with_nothing_skipped(family_run):
    out, code, summary, loaded = family_run
    assert summary["skipped"] == {} and code == 0
    assert set(loaded) == set(tiny_families.VARIANTS)
    for name in tiny_families.VARIANTS:
        built = {e.split("/")[1] for e in summary["generated"] if e.split("/")[0] == name}
        na = {e.split("/")[1] for e in summary["not_applicable"] if e.split("/")[0] == name}
        assert built | na == set(registry()), name
        assert na == (set() if name in LEARNED else {"pos_embed"}), name


def test_hooks_are_removed_after_the_run(family_run):
    *_, loaded = family_run
    for name, (model, before) in loaded.items():
        assert _hooks(model) == before, name


def test_parallel_blocks_have_no_mid_block_residual_and_the_pages_say_so(family_run):
    out, *_ = family_run
    for name in tiny_families.VARIANTS:
        norms = json.loads((out / name / "norms/norm_by_site.table.json").read_text())
        points = {r["point"] for r in norms}
        layerwise = json.loads((out / name / "layerwise/pca_unit.table.json").read_text())
        notes = json.loads((out / name / "norms/result.json").read_text())["notes"]
        if name in tiny_families.PARALLEL:
            assert "resid_attn" not in points and "resid_attn" not in {r["point"] for r in layerwise}
            assert any("no mid-block residual (parallel block)" in n for n in notes), name
        else:
            assert "resid_attn" in points, name
            assert not any("parallel" in n for n in notes), name
        assert all(r["tokens"] > 0 for r in norms), name
    olmo2 = {r["point"] for r in json.loads((out / "olmo2/norms/norm_by_site.table.json").read_text())}
    assert not olmo2 & {"norm_attn", "norm_mlp"} and {"attn", "resid_attn", "mlp"} <= olmo2


def test_learned_tables_start_at_position_zero_and_other_schemes_are_named(family_run):
    out, *_ = family_run
    for name in LEARNED:  # OPT's table has 2 extra rows before position 0
        facts = json.loads((out / name / "pos_embed/result.json").read_text())["facts"]
        assert facts["n_positions"] == 128, name
    for name, words in {"bloom": "ALiBi", "falcon-rw": "ALiBi", "llama": "rotary",
                        "gptj": "rotary"}.items():
        notes = json.loads((out / name / "pos_embed/result.json").read_text())["notes"]
        assert words in notes[0], (name, notes)
