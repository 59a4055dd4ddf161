"""The suite file: TOML read into frozen dataclasses, checked key by key against their type hints.

Unknown keys and wrong types are errors naming the file, the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from generator.errors import SuiteError
from generator.models import ModelSpec

SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
"""What a model name may be: it names an output folder, a file path segment and a page anchor."""


@dataclass(frozen=True)
class RepeatInputs:
    tokens: list[str] = field(default_factory=lambda: [" the", ".", " cat", "\n"])
    """Each string's first token is repeated to make one sequence (BOS first where there is one)."""
    seq_len: int = 64


@dataclass(frozen=True)
class SingularInputs:
    max_tokens: int = 0
    """Run the first N vocabulary ids, each alone; 0 means the whole vocabulary."""
    batch_size: int = 1024


@dataclass(frozen=True)
class Inputs:
    source: str = "embedded"
    """`embedded` (Python's bundled docs), a `.txt`/`.jsonl` path, or `hf:NAME` (streamed)."""
    n_samples: int = 16
    seq_len: int = 128
    batch_size: int = 8
    windows: str = "packed"
    """`packed`: consecutive windows of the token stream; `documents`: one per doc, padded."""
    text_field: str = "text"
    """Field holding the text in `.jsonl` files and Hugging Face datasets."""
    split: str = "train"
    dataset_revision: str | None = None
    repeat: RepeatInputs = field(default_factory=RepeatInputs)
    singular: SingularInputs = field(default_factory=SingularInputs)


@dataclass(frozen=True)
class CaptureOptions:
    device: str = "auto"
    """`auto`, `cpu` or `cuda`; on CUDA the reducers stay on the GPU."""
    cov_every: int = 8
    """PCA covariance from 1 in k tokens (a fixed hash of sample and position, the same under any
    sharding); 1 is exact. 8 keeps capture at the forward-pass limit (`make bench` measures both,
    and how far the sampled PCA is from the exact one)."""
    cov_matmul: str = "auto"
    """Precision of the covariance's products: `float32`, `bfloat16` (inputs rounded to bfloat16,
    each product's d x d result rounded once, summed in float32 and merged in float64), or `auto`:
    bfloat16 where the capture device multiplies it natively (CUDA GPUs with bfloat16, CPUs with
    AVX512-BF16 or AMX), float32 elsewhere. On SmolLM2's states (the suite's text) bfloat16
    products move the covariance by 2-5e-4 (relative, Frobenius; the CPU's 4 MB row pools) and
    the leading explained-variance ratios by under 2e-5, 40-200x less than the 1-in-8 sample
    moves them (`make bench` measures both), and the products run about 3x faster (Zen 4 CPU)."""
    cov_keep_above: float = 3.0
    """With `cov_every` > 1, raw (not unit) covariances always keep tokens whose norm is at least
    this multiple of the site's median in the batch (weight 1; the rest weigh `cov_every`):
    attention/MLP outputs are heavy-tailed, and a plain 1-in-8 sample misses the tokens that set
    their top components. 0 turns it off."""
    points_per_site: int = 100
    """Reservoir sample size per capture site, for scatters, UMAP and separability."""
    max_chart_points: int = 4000
    """Cap on points drawn in one scatter; the subtitle says how many of how many."""
    shard_batches: int = 4
    """Batches per shard: each shard is reduced on its own and shards are merged in order, so a
    run gives the same numbers on one process or on many Ray workers."""


@dataclass(frozen=True)
class Watch:
    """A hub query for new releases, listed as candidates in the release pull request.

    Never added to the suite automatically: a person decides what joins the atlas.
    """

    author: str | None = None
    """Hub user or organisation, e.g. `meta-llama`."""
    search: str | None = None
    """Substring of the model id, e.g. `Llama-3`."""
    limit: int = 10
    """How many of the most recently modified matches to list."""


@dataclass(frozen=True)
class Suite:
    title: str = "latent-atlas report"
    seed: int = 42
    models: list[ModelSpec] = field(default_factory=list)
    inputs: Inputs = field(default_factory=Inputs)
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    claims: dict[str, float] = field(default_factory=dict)
    """Thresholds that turn the paper's findings into checked claims; the experiments declare
    which keys exist and their defaults."""
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per experiment: `enabled` plus its own parameters (checked by the experiment)."""
    watch: list[Watch] = field(default_factory=list)
    """`[[watch]]` hub queries whose new models the release watch lists as candidates."""
    path: str = field(default="", metadata={"internal": True})
    digest: str = field(default="", metadata={"internal": True})

    def experiment_enabled(self, name: str) -> bool:
        return bool(self.experiments.get(name, {}).get("enabled", True))

    def claim_thresholds(self) -> dict[str, float]:
        """Every claim threshold: the experiments' defaults, overridden by `[claims]`."""
        from generator.experiment import claim_defaults

        return {**claim_defaults(), **self.claims}


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    if not p.is_file():
        raise SuiteError(str(p), "suite file not found", "pass --suite PATH to an existing TOML file")
    raw = p.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(str(p), f"not valid TOML ({exc})", "fix the syntax at that line") from None
    suite = build(Suite, data, str(p), "")
    _check(suite, str(p))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return dataclasses.replace(suite, path=str(p), digest=digest)


def _check(suite: Suite, file: str) -> None:
    names = [m.name for m in suite.models]
    if len(set(names)) != len(names):
        raise SuiteError(file, f"[[models]] names repeat: {names}", "give each model its own name")
    for m in suite.models:
        if not SAFE_NAME.fullmatch(m.name) or m.name in (".", ".."):
            raise SuiteError(f"{file}: [[models]] name {m.name!r}",
                             "a model name becomes a folder and a page section, so it must be a "
                             "plain slug (letters, digits, '.', '_', '-'; not '.' or '..')",
                             "rename it, e.g. name = \"my-model\"")
        if m.id is not None and not HUB_ID.fullmatch(m.id):
            raise SuiteError(f"{file}: [[models]] {m.name} id {m.id!r}",
                             "not a Hugging Face hub id (`name` or `owner/name`: letters, digits, "
                             "'-', '_', '.'; no spaces)", "e.g. id = \"openai-community/gpt2\"")
        if sum(x is not None for x in (m.id, m.path, m.embedded)) != 1:
            raise SuiteError(f"{file}: [[models]] {m.name}",
                             "needs exactly one of `id`, `path`, `embedded`",
                             "e.g. id = \"gpt2\" or path = \"models/x.gguf\"")
    for n, w in enumerate(suite.watch):
        if not (w.author or w.search) or w.limit < 1:
            raise SuiteError(f"{file}: watch[{n}]", "needs `author` or `search`, and `limit` of at "
                             "least 1", "e.g. [[watch]] author = \"meta-llama\" limit = 5")
        if w.author is not None and not SAFE_NAME.fullmatch(w.author):
            raise SuiteError(f"{file}: watch[{n}].author {w.author!r}", "not a hub user or "
                             "organisation name", "e.g. author = \"meta-llama\"")
    from generator.experiment import claim_defaults

    known = claim_defaults()
    for key in suite.claims:
        if key not in known:
            raise SuiteError(f"{file}: claims.{key}", "no experiment declares this claim threshold",
                             f"known: {', '.join(sorted(known))}")
    i, c = suite.inputs, suite.capture
    minimum = {"inputs.n_samples": (i.n_samples, 1), "inputs.seq_len": (i.seq_len, 2),
               "inputs.batch_size": (i.batch_size, 1), "inputs.repeat.seq_len": (i.repeat.seq_len, 2),
               "inputs.singular.max_tokens": (i.singular.max_tokens, 0),
               "inputs.singular.batch_size": (i.singular.batch_size, 1),
               "capture.cov_every": (c.cov_every, 1), "capture.shard_batches": (c.shard_batches, 1),
               "capture.points_per_site": (c.points_per_site, 1),
               "capture.max_chart_points": (c.max_chart_points, 1)}
    for key, (v, least) in minimum.items():
        if v < least:
            raise SuiteError(f"{file}: {key}", f"must be at least {least}, got {v}",
                             f"set {key.rsplit('.', 1)[-1]} to {least} or more")
    if c.cov_keep_above < 0:
        raise SuiteError(f"{file}: capture.cov_keep_above", f"must not be negative, got "
                         f"{c.cov_keep_above}", "use 0 (off) or a multiple such as 3.0")
    choices = {"inputs.windows": (i.windows, ("packed", "documents")),
               "capture.device": (c.device, ("auto", "cpu", "cuda")),
               "capture.cov_matmul": (c.cov_matmul, ("auto", "float32", "bfloat16"))}
    for key, (v, allowed) in choices.items():
        if v not in allowed:
            raise SuiteError(f"{file}: {key}", f"unknown value {v!r}",
                             f"use one of: {', '.join(allowed)}")


def build(cls: type, data: Any, file: str, where: str) -> Any:
    """Make dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: {where or 'top level'}", "expected a table", "see suite.toml")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SuiteError(f"{file}: {_join(where, unknown[0])}", "unknown key",
                         f"known keys here: {', '.join(sorted(fields))}")
    values = {k: convert(hints[k], v, file, _join(where, k)) for k, v in data.items()}
    return cls(**values)


def convert(tp: Any, v: Any, file: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(a, v, file, key)
            except SuiteError:
                pass
        raise _type_error(file, key, tp, v)
    if dataclasses.is_dataclass(tp):
        return build(tp, v, file, key)
    if origin is list:
        if not isinstance(v, list):
            raise _type_error(file, key, tp, v)
        return [convert(args[0], x, file, f"{key}[{n}]") for n, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise _type_error(file, key, tp, v)
        return {str(k): convert(args[1], x, file, _join(key, k)) for k, x in v.items()}
    if tp is Any:
        return v
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if tp is int and isinstance(v, bool) or not isinstance(v, tp):
        raise _type_error(file, key, tp, v)
    return v


def _type_error(file: str, key: str, tp: Any, v: Any) -> SuiteError:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return SuiteError(f"{file}: {key}", f"expected {name}, got {type(v).__name__} {v!r}",
                      f"write {key.rsplit('.', 1)[-1]} as a {name}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_params(cls: type, data: dict[str, Any], file: str, experiment: str) -> Any:
    """Build an experiment's Params from its suite table (minus `enabled`)."""
    body = {k: v for k, v in data.items() if k != "enabled"}
    if "enabled" in data and not isinstance(data["enabled"], bool):
        raise _type_error(file, f"experiments.{experiment}.enabled", bool, data["enabled"])
    return build(cls, body, file, f"experiments.{experiment}")
