"""The pages a reader opens first: home (findings, then numbers), methods, experiment headers."""

import html
import re

import pytest

from generator.experiment import registry
from generator.site import pages
from generator.site.render import escape

pytestmark = pytest.mark.slow


def test_home_opens_with_one_thumbnail_and_verdict_per_finding(small_site):
    root, _ = small_site
    index = (root / "docs/index.md").read_text(encoding="utf-8")
    findings = index.index("## Findings")
    assert findings < index.index("## Headline numbers") < index.index("## Models in this build")
    cards = html.unescape(index[findings:index.index("## Headline numbers")])
    for name in registry():
        assert f'<h3><a href="{name}.html">' in cards, name
        m = re.search(rf'<img src="(assets/charts/tiny-gpt2/{name}/[^"]+\.svg)"', cards)
        assert m, f"{name}: no thumbnail of the first built model"
        assert (root / "site" / m.group(1)).is_file()
    assert cards.count('class="atlas-badge') >= sum(len(e.claims) for e in registry().values())
    assert "no claim checked" in cards  # pages without a claim say so, with a number


def test_a_model_that_could_not_be_built_takes_one_line(small_site):
    root, _ = small_site
    index = (root / "docs/index.md").read_text(encoding="utf-8")
    lines = [x for x in index.splitlines() if "missing-model was not available" in x]
    assert len(lines) == 1
    line = lines[0]
    shown = line.split("<details>")[0]
    assert "fix" not in shown.lower() and len(re.sub(r"<[^>]+>", "", shown)) < 300
    assert "<details><summary>" in line  # the full reason and fix, folded


def test_every_experiment_page_says_what_it_was_computed_on(small_site):
    root, _ = small_site
    for name, exp in registry().items():
        page = (root / "docs" / f"{name}.md").read_text(encoding="utf-8")
        blocks = re.findall(r'<div class="atlas-inputs"><strong>Computed on</strong>(.*?)</div>',
                            page, re.S)
        assert blocks, name
        text = blocks[0]
        assert "model: tiny-gpt2 (" in text and "sha256 " in text, name
        if "text" in exp.modes:
            assert "samples × 24 tokens" in text and "6 samples" in text, (name, text)
            assert "pydoc&#95;data.topics" in text or "pydoc_data.topics" in text, (name, text)
        if "repeat" in exp.modes:
            assert "2 sequences × 12 tokens" in text and "␣a" in text, (name, text)
        if "singular" in exp.modes:
            assert "token ids 0-63" in text, (name, text)


def test_methods_page_compares_with_the_paper_and_maps_every_chart(small_site):
    root, _ = small_site
    methods = (root / "docs/methods.md").read_text(encoding="utf-8")
    assert 'href="https://arxiv.org/abs/2511.21594"' in methods
    diff = methods[methods.index("## How this run differs from the paper"):]
    for aspect in ("models", "text corpus", "text size", "middle blocks", "UMAP"):
        assert f"<td>{aspect}</td>" in diff, aspect
    assert "128 documents × 1,024 tokens" in diff and "6 samples × 24 tokens" in diff
    assert "missing-model" in diff  # a model of this suite that was not built is named
    mapping = methods[methods.index("{#paper-figures}"):]
    for name, exp in registry().items():
        for chart in (p.name.removesuffix(".vl.json") for p in
                      (root / "docs/assets/charts/tiny-gpt2" / name).glob("*.vl.json")):
            assert f"<code>{escape(chart)}</code>" in mapping, (name, chart)
        for chart, figure in exp.paper_figures.items():
            assert str(escape(figure)) in mapping, (name, chart)
    html = (root / "site/methods.html").read_text(encoding="utf-8")
    assert 'id="paper-figures"' in html  # the anchor each chart's caption links to


def test_words_for_inputs_and_failures():
    text = {"mode": "text", "source": "embedded: Python's bundled documentation (pydoc_data.topics)",
            "revision": "python 3.11", "n_samples": 64, "seq_len": 256, "valid_tokens": 16384,
            "windows": "packed: 64 consecutive windows", "bos": True}
    assert pages.mode_words("text", text) == (
        "text: Python's bundled documentation (pydoc_data.topics), python 3.11; 64 samples × "
        "256 tokens (16,384 tokens, packed consecutive windows, BOS first)")
    rep = {"source": "repeated tokens", "tokens": [" the", "\n"], "n_samples": 2, "seq_len": 64}
    assert pages.mode_words("repeat", rep) == (
        "repeat: 2 sequences × 64 tokens, one token repeated in each (“␣the”, “\\n”)")
    assert pages.mode_words("singular", {"first_ids": 49152, "n_samples": 49152}) == (
        "singular: token ids 0-49,151, each run alone (49,152 one-token inputs)")
    reason = ("gpt2: could not load 'openai-community/gpt2' from the local Hugging Face cache and "
              "the hub (unreachable or offline) (OSError: We couldn't connect to "
              "'https://huggingface.co' to load the files.)\n  fix: run once online")
    assert pages.short_reason("gpt2", reason) == (
        "could not load 'openai-community/gpt2' from the local Hugging Face cache and the hub "
        "(unreachable or offline)")
    hub = {"id": "openai-community/gpt2", "revision": "607a30d783dfa663caf39e06633721c8d4cfcd7e"}
    assert pages.model_words("gpt2", hub) == "gpt2 (openai-community/gpt2, revision 607a30d783df)"
