"""Token inputs for the paper's three modes: text windows, single tokens, repeated tokens.

Inputs are small (token ids only), so they are built up front; states are never materialized.
The embedded corpus is Python's own bundled documentation (`pydoc_data.topics`): it ships with
every CPython, needs no download, and is real English prose mixed with code, like PG-19 it is
long-form text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generator.capture.batch import Batch
from generator.errors import InputError
from generator.experiment import MODES
from generator.suite import Inputs


@dataclass
class TokenInputs:
    """A (n_samples, seq_len) id matrix with its mask and where it came from."""

    mode: str
    ids: torch.Tensor
    mask: torch.Tensor
    batch_size: int
    source: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    first: int = 0
    """Global index of row 0: a shard shipped to a worker keeps its samples' identities."""

    @property
    def n_samples(self) -> int:
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Batches over samples [start, stop): shards are just sample ranges."""
        stop = self.n_samples if stop is None else stop
        for i in range(start, stop, self.batch_size):
            j = min(i + self.batch_size, stop)
            yield Batch(self.ids[i:j], self.mask[i:j], torch.arange(self.first + i, self.first + j))

    def shards(self, batches_per_shard: int) -> list[tuple[int, int]]:
        """Sample ranges of `batches_per_shard` batches: the fixed units whose states are merged."""
        step = self.batch_size * batches_per_shard
        return [(i, min(i + step, self.n_samples)) for i in range(0, self.n_samples, step)]

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.ids.numpy().tobytes() + self.mask.numpy().tobytes()).hexdigest()
        return {"mode": self.mode, **self.source, "n_samples": self.n_samples,
                "seq_len": self.seq_len, "tokens_sha256": digest,
                "valid_tokens": int(self.mask.sum())}


def build_inputs(mode: str, tokenizer: Any, cfg: Inputs, max_len: int | None,
                 vocab_size: int) -> TokenInputs:
    if mode == "text":
        return text_inputs(tokenizer, cfg, max_len)
    if mode == "repeat":
        return repeat_inputs(tokenizer, cfg, max_len)
    if mode == "singular":
        n = cfg.singular.max_tokens or vocab_size
        ids = torch.arange(min(n, vocab_size)).unsqueeze(1)
        return TokenInputs("singular", ids, torch.ones_like(ids, dtype=torch.bool),
                           cfg.singular.batch_size, {"source": "vocabulary",
                                                     "first_ids": int(ids.shape[0])})
    raise InputError(f"mode {mode!r}", "unknown input mode", f"use one of {', '.join(MODES)}")


def _bos(tokenizer: Any) -> int | None:
    return getattr(tokenizer, "bos_token_id", None)


def _with_bos(ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    bos = torch.full((ids.shape[0], 1), _bos(tokenizer), dtype=ids.dtype)
    return torch.cat([bos, ids], dim=1)


def _check_len(seq_len: int, max_len: int | None, key: str) -> None:
    if max_len is not None and seq_len > max_len:
        raise InputError(key, f"seq_len {seq_len} is beyond the model's context of {max_len}",
                         f"set {key} to at most {max_len}")


def text_inputs(tokenizer: Any, cfg: Inputs, max_len: int | None) -> TokenInputs:
    _check_len(cfg.seq_len, max_len, "inputs.seq_len")
    bos = _bos(tokenizer)
    body = cfg.seq_len - (bos is not None)
    docs, source = documents(cfg)
    if cfg.windows == "packed":
        need = cfg.n_samples * body
        stream: list[int] = []
        used = []
        for doc_id, text in docs:
            used.append(doc_id)
            stream += tokenizer.encode(text, add_special_tokens=False)
            if getattr(tokenizer, "eos_token_id", None) is not None:
                stream.append(tokenizer.eos_token_id)
            if len(stream) >= need:
                break
        if len(stream) < need:
            raise InputError(source["source"], f"too little text: {len(stream)} tokens, "
                             f"{need} needed for {cfg.n_samples} windows of {body}",
                             "lower inputs.n_samples or inputs.seq_len, or use a larger source")
        ids = torch.tensor(stream[:need]).view(cfg.n_samples, body)
        mask = torch.ones_like(ids, dtype=torch.bool)
        source["windows"] = f"packed: {cfg.n_samples} consecutive windows"
        source["documents"] = used
    else:
        rows, used = [], []
        for doc_id, text in docs:
            toks = tokenizer.encode(text, add_special_tokens=False)[:body]
            if toks:
                rows.append(toks)
                used.append(doc_id)
            if len(rows) == cfg.n_samples:
                break
        if len(rows) < cfg.n_samples:
            raise InputError(source["source"], f"only {len(rows)} non-empty documents, "
                             f"{cfg.n_samples} needed", "lower inputs.n_samples or add documents")
        ids = torch.zeros(len(rows), body, dtype=torch.long)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for r, toks in enumerate(rows):
            ids[r, : len(toks)] = torch.tensor(toks)
            mask[r, : len(toks)] = True
        source["documents"] = used
    if bos is not None:
        ids = _with_bos(ids, tokenizer)
        mask = torch.cat([torch.ones(ids.shape[0], 1, dtype=torch.bool), mask], dim=1)
    source["bos"] = bos is not None
    return TokenInputs("text", ids, mask, cfg.batch_size, source)


def documents(cfg: Inputs) -> tuple[Iterable[tuple[str, str]], dict[str, Any]]:
    """(doc id, text) pairs from the configured source, lazily, plus a description of it."""
    src = cfg.source
    if src == "embedded":
        import sys
        from pydoc_data.topics import topics

        keys = sorted(topics)
        return ((k, topics[k]) for k in keys), {
            "source": "embedded: Python's bundled documentation (pydoc_data.topics)",
            "revision": f"python {sys.version_info.major}.{sys.version_info.minor}"}
    if src.startswith("hf:"):
        return _hf_documents(cfg)
    path = Path(src).expanduser()
    if not path.is_file():
        raise InputError(src, "text source not found",
                         "set inputs.source to `embedded`, a .txt/.jsonl file, or hf:NAME")
    if path.stat().st_size == 0:
        raise InputError(src, "the file is empty", "point inputs.source at a file with text")
    desc = {"source": str(path), "revision": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}
    if path.suffix == ".jsonl":
        return _jsonl(path, cfg.text_field), desc
    if path.suffix == ".txt":
        return [(path.name, path.read_text(encoding="utf-8", errors="replace"))], desc
    raise InputError(src, f"unsupported file type {path.suffix!r}", "use a .txt or .jsonl file")


def _jsonl(path: Path, key: str) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[key]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{n}", f"not a JSON object with a {key!r} string",
                                 "fix that line or set inputs.text_field") from None
            yield f"line {n}", str(text)


def _hf_documents(cfg: Inputs) -> tuple[Iterable[tuple[str, str]], dict[str, Any]]:
    name = cfg.source[3:]
    try:
        from datasets import load_dataset

        ds = load_dataset(name, split=cfg.split, streaming=True, revision=cfg.dataset_revision)
        first = iter(ds)
        head = next(first)
    except Exception as exc:
        raise InputError(cfg.source, f"could not stream the dataset ({type(exc).__name__})",
                         "check the name and your connection, or use a local .jsonl copy") from None

    def gen() -> Iterator[tuple[str, str]]:
        yield "0", str(head[cfg.text_field])
        for n, row in enumerate(first, 1):
            yield str(n), str(row[cfg.text_field])

    return gen(), {"source": f"huggingface dataset {name} ({cfg.split})",
                   "revision": cfg.dataset_revision or "main"}


def repeat_inputs(tokenizer: Any, cfg: Inputs, max_len: int | None) -> TokenInputs:
    r = cfg.repeat
    _check_len(r.seq_len, max_len, "inputs.repeat.seq_len")
    bos = _bos(tokenizer)
    ids, labels = [], []
    for s in r.tokens:
        toks = tokenizer.encode(s, add_special_tokens=False)
        if not toks:
            raise InputError(f"inputs.repeat.tokens {s!r}", "encodes to no token",
                             "use a non-empty string")
        ids.append([toks[0]] * (r.seq_len - (bos is not None)))
        labels.append(s)
    t = torch.tensor(ids)
    t = _with_bos(t, tokenizer) if bos is not None else t
    return TokenInputs("repeat", t, torch.ones_like(t, dtype=torch.bool), cfg.batch_size,
                       {"source": "repeated tokens", "tokens": labels}, labels)
