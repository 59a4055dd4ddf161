"""The Compare page: models of different families and depths on one relative-depth axis."""

import json

import pytest
from helpers import only_experiments, save_tiny_folder, tiny_gpt2, tiny_llama, write_suite

from generator import pipeline as runner
from generator.experiment import registry
from generator.site import history, render
from generator.site.findings import fmt, headline_values, load_build
from generator.suite import load_suite

KEEP = ("norms", "layerwise", "attn_vs_mlp")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Tiny GPT-2 (2 blocks) and tiny LLaMA (3 blocks), built and rendered."""
    root = tmp_path_factory.mktemp("compare")
    gpt2 = save_tiny_folder(root / "g", tiny_gpt2(n_layer=2))
    llama = save_tiny_folder(root / "l", tiny_llama(n_layer=3))
    suite = only_experiments(write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(gpt2)}, {"name": "tiny-llama", "path": str(llama)}]),
        KEEP)
    runner.run(load_suite(suite), root / "artifacts", progress=False)
    render.render(root / "artifacts", root / "docs")
    return root, suite


def _chart_rows(root, name):
    return json.loads((root / f"docs/assets/charts/_compare/{name}.data.json").read_text())


def test_every_comparison_puts_both_models_on_relative_depth_with_their_own_values(two):
    root, _ = two
    build = {m.name: m for m in load_build(root / "artifacts")["models"]}
    depth = {"tiny-gpt2": 2, "tiny-llama": 3}
    drawn = 0
    for exp_name, exp in registry().items():
        for comp in exp.comparisons:
            rows = _chart_rows(root, f"{exp_name}-{comp.name}")
            assert {r["model"] for r in rows} == set(depth), comp.name
            for model, n in depth.items():
                mine = [r for r in rows if r["model"] == model]
                assert {r["blocks"] for r in mine} == {n}
                assert {r["family"] for r in mine} == {model.removeprefix("tiny-")}
                for r in mine:
                    assert r["relative_depth"] == pytest.approx(r["block"] / (n - 1), abs=1e-6)
                expected = comp.rows(build[model].experiments[exp_name].result)
                got = sorted((r["block"], r["series"], r["value"]) for r in mine)
                want = sorted((int(e["block"]), e.get("series", comp.y_title), e["value"])
                              for e in expected)
                assert [g[:2] for g in got] == [w[:2] for w in want]
                assert [g[2] for g in got] == pytest.approx([w[2] for w in want], rel=1e-5)
            drawn += 1
    assert drawn >= 4  # position-0 ratio, norm growth, separability, centroid step
    ratio = [r for r in _chart_rows(root, "norms-pos0_ratio")
             if r["model"] == "tiny-llama" and r["series"] == "position 0"]
    table = build["tiny-llama"].experiments["norms"].result.tables["pos0_ratio_by_block"]
    assert sorted(r["value"] for r in ratio) == pytest.approx(
        sorted(t["ratio"] for t in table if t["ratio"] and t["ratio"] > 0), rel=1e-5)


def test_cross_model_table_agrees_with_each_models_headlines(two):
    root, _ = two
    page = (root / "docs/compare.md").read_text()
    assert 'class="atlas-sortable"' in page and "Only one model" not in page
    for m in load_build(root / "artifacts")["models"]:
        row = page.split(f"<tr><td>{m.name}</td>")[1].split("</tr>")[0]
        for label, value in headline_values(m).items():
            assert f"<td>{fmt(value)}</td>" in row, (m.name, label)
        assert m.name.removeprefix("tiny-") in row  # the family column
    nav = json.loads((root / "docs/.nav.json").read_text())
    assert ["Compare models", "compare.md"] in nav


def test_a_single_model_build_says_so_instead_of_drawing(two, tmp_path):
    root, suite = two
    runner.run(load_suite(suite), tmp_path / "a", only=["tiny-gpt2"], progress=False)
    render.render(tmp_path / "a", tmp_path / "docs")
    page = (tmp_path / "docs/compare.md").read_text()
    assert "Only one model was built in this build (tiny-gpt2)" in page
    assert "atlas-sortable" not in page
    assert not list((tmp_path / "docs/assets/charts/_compare").glob("norms-*"))


def test_history_chart_appears_for_a_model_with_two_revisions(two, tmp_path):
    import shutil

    root, _ = two
    shutil.copytree(root / "artifacts", tmp_path / "a")
    past = history.read(tmp_path / "a")
    first = past["tiny-gpt2"][0]
    older = {**first, "ident": "0" * 40, "first_seen": "2026-01-02", "date": "2026-01-02",
             "headlines": {k: v * 2 for k, v in first["headlines"].items() if v is not None}}
    past["tiny-gpt2"] = [older, first]
    (tmp_path / "a/history.json").write_text(json.dumps(past))
    render.render(tmp_path / "a", tmp_path / "docs")
    page = (tmp_path / "docs/compare.md").read_text()
    assert "### tiny-gpt2" in page and "history-tiny-gpt2" in page
    rows = json.loads((tmp_path / "docs/assets/charts/_compare/history-tiny-gpt2.data.json")
                      .read_text())
    assert {r["revision"] for r in rows} == {"0" * 12, first["ident"][:12]}
    assert {r["date"] for r in rows} >= {"2026-01-02"}
    assert "history-tiny-llama" not in page  # one revision: nothing to draw
    assert "compare.html" in (tmp_path / "docs/changelog.md").read_text()
