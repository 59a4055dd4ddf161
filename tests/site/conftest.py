"""A small report site, built once for the chart lint and page tests (tiny random models)."""

import json

import pytest
from helpers import write_suite
from sitebuild import REPEAT_TOKENS, ROOT, free_port


@pytest.fixture(scope="session")
def small_site(tiny_folders, tmp_path_factory):
    """Artifacts, docs and site of tiny GPT-2 + tiny LLaMA + one model that cannot load.

    Returns (root, port): root holds `artifacts/`, `docs/`, `site/`; the site's URL uses `port`.
    """
    from generator import pipeline as runner
    from generator.site import render
    from generator.suite import load_suite

    root = tmp_path_factory.mktemp("small-site")
    port = free_port()
    suite = write_suite(root / "suite.toml", [
        {"name": "tiny-gpt2", "path": str(tiny_folders["gpt2"])},
        {"name": "tiny-llama", "path": str(tiny_folders["llama_gguf"])},
        {"name": "missing-model", "path": str(root / "nowhere")}])
    text = suite.read_text().replace('tokens = ["a", "b"]',
                                     f"tokens = {json.dumps(REPEAT_TOKENS)}")
    suite.write_text(text)
    runner.run(load_suite(suite), root / "artifacts", progress=False)
    render.render(root / "artifacts", root / "docs")
    cfg = (ROOT / "mkdocs.yml").read_text().replace(
        '!ENV [ATLAS_SITE_URL, "http://127.0.0.1:8000/"]', f"http://127.0.0.1:{port}/")
    (root / "mkdocs.yml").write_text(cfg)
    render.build_site(root / "docs", root / "site", root / "mkdocs.yml")
    return root, port
