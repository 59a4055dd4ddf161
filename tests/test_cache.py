"""Compute keys follow what a result depends on: its code path, suite values and model."""

import importlib
from pathlib import Path

import pytest
from helpers import write_suite

from generator import cache, experiment
from generator import pipeline as runner
from generator.suite import load_suite

EXPERIMENTS = Path(experiment.__file__).parent / "experiments"


def _fresh():
    """Forget imported test modules (and their bytecode) so the registry reads the files again."""
    import sys

    for name in [m for m in sys.modules if m.startswith("generator.experiments.zz_")]:
        del sys.modules[name]
    for pyc in (EXPERIMENTS / "__pycache__").glob("zz_*"):
        pyc.unlink()
    experiment.registry.cache_clear()
    cache.code_digest.cache_clear()
    importlib.invalidate_caches()


def test_a_reducer_change_reruns_exactly_the_experiments_that_use_it(monkeypatch):
    before = {n: cache.code_digest(e.module) for n, e in experiment.registry().items()}
    original = cache.compute_source

    def edited(path):
        text = original(path)
        return text + "edited" if path.name == "covariance.py" else text

    monkeypatch.setattr(cache, "compute_source", edited)
    cache.code_digest.cache_clear()
    after = {n: cache.code_digest(e.module) for n, e in experiment.registry().items()}
    cache.code_digest.cache_clear()
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"attn_vs_mlp", "layerwise"}


def test_chart_functions_and_docstrings_are_not_part_of_the_compute_code(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\ndef compute(x):\n    return x + 1\n\ndef charts(r):\n    return {"t": 1}\n')
    b.write_text('"""Other words."""\ndef compute(x):\n    return x + 1\n\ndef charts(r):\n    return {"t": 2}\n')
    c.write_text('"""Doc."""\ndef compute(x):\n    return x + 2\n\ndef charts(r):\n    return {"t": 1}\n')
    assert cache.compute_source(a) == cache.compute_source(b) != cache.compute_source(c)
    norms_path = cache.closure(cache._file_of("generator.experiments.norms"))
    assert not any(p.name == "charts.py" or "site" in p.parts for p in norms_path)


@pytest.fixture
def throwaway():
    """A copy of the norms experiment under a new module and name, removed afterwards."""
    path = EXPERIMENTS / "zz_norms_copy_for_test.py"
    text = (EXPERIMENTS / "norms.py").read_text().replace('name="norms"', 'name="norms_copy"')
    path.write_text(text.replace('title="Norms across depth and position"',
                                 'title="Norms, a copy"'))
    _fresh()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        _fresh()


def test_a_new_module_is_a_new_page_and_a_chart_edit_needs_no_forward_pass(
        throwaway, tiny_folders, tmp_path):
    from generator.site import render

    suite = load_suite(write_suite(tmp_path / "s.toml", [
        {"name": "tiny", "path": str(tiny_folders["gpt2"])}]).as_posix())
    first = runner.run(suite, tmp_path / "a", progress=False)
    assert "tiny/norms_copy" in first.generated and first.forwards > 0
    render.render(tmp_path / "a", tmp_path / "docs")
    page = (tmp_path / "docs/norms_copy.md").read_text()
    assert "Norms, a copy" in page and "atlas-chart" in page
    assert ("Norms, a copy", "norms_copy.md") in [tuple(x) for x in __import__("json").loads(
        (tmp_path / "docs" / render.NAV_FILE).read_text())]

    throwaway.write_text(throwaway.read_text().replace(
        '"Norm of every capture point across depth, position 0 apart"',
        '"Restyled: norm across depth"'))
    _fresh()
    again = runner.run(suite, tmp_path / "a", progress=False)
    assert again.forwards == 0 and not again.generated
    render.render(tmp_path / "a", tmp_path / "docs")
    spec = (tmp_path / "docs/assets/charts/tiny/norms_copy/norm_by_depth.vl.json").read_text()
    assert "Restyled: norm across depth" in spec

    throwaway.write_text(throwaway.read_text().replace("middle_fraction: float = 0.6",
                                                       "middle_fraction: float = 0.5"))
    _fresh()
    third = runner.run(suite, tmp_path / "a", progress=False)
    assert third.generated == ["tiny/norms_copy"] and third.forwards > 0


def test_an_incomplete_or_duplicate_experiment_is_refused_by_name(tmp_path):
    from generator.errors import AtlasError

    bad = EXPERIMENTS / "zz_broken_for_test.py"
    try:
        bad.write_text('"""Nothing declared."""\n')
        _fresh()
        with pytest.raises(AtlasError, match="zz_broken_for_test.py.*defines no `EXPERIMENT"):
            experiment.registry()
        bad.write_text((EXPERIMENTS / "norms.py").read_text())  # same name "norms"
        _fresh()
        with pytest.raises(AtlasError, match="already taken by generator/experiments/norms.py"):
            experiment.registry()
    finally:
        bad.unlink(missing_ok=True)
        _fresh()
