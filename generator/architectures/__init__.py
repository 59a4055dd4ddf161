"""Architecture families: how each family's blocks add to the residual stream, as data.

One file per family in this package declares `FAMILY = Architecture(...)`; the registry finds
them by itself, keyed by `config.model_type`, and the site's "Supported architectures" page is
generated from them. The capture (`generator/capture/wiring.py`, `hooks.py`) reads nothing but
the declaration, so adding a family is one short file plus its test. Importing this package
loads no torch (the renderer lists the families).

The defaults are the LLaMA-style pre-norm block (`layers[i]` with `input_layernorm`,
`self_attn`, `post_attention_layernorm`, `mlp`, final `norm`); a family states only what
differs, as nnterp's family files do. The wiring of every family was read from the source of
transformers 5.24 and checked numerically (`../shared/ARCHITECTURES.md`); each declaration is
checked again on every batch of every run by the residual check.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from generator.errors import AtlasError, ModelLoadError

if TYPE_CHECKING:
    import torch

Path = str | tuple[str, ...] | None
"""A module path inside a block: one path, candidates (the first present in the block wins:
Falcon's and StableLM's norms depend on the config), or None (the block has no such module)."""

SCHEMES = {
    "learned": "a learned position table added to the token embedding",
    "rotary": "rotary position embeddings (RoPE)",
    "partial rotary": "rotary position embeddings (RoPE) on part of each attention head",
    "alibi": "ALiBi attention biases",
}
"""Position schemes, in words. Only `learned` puts a table into the residual stream."""

ABSENT = {
    "resid_attn": "no mid-block residual (parallel block): attention and MLP both read the "
                  "block input and their outputs are added together",
    "norm_attn": "no norm before attention (the block normalizes the attention output instead)",
    "norm_mlp": "no norm before the MLP (the block normalizes the MLP output instead)",
}
"""Why a capture point does not exist in some blocks: the site says this instead of a chart."""

TAPPED = ("attn", "mlp", "norm_mlp", "resid_attn")
"""Points a declaration may mark as needing a clone or as flattened to (B*T, d)."""

TINY_RUN = ("tiny random model (2 blocks, width 32, perturbed norm weights) saved with "
            "save_pretrained and run through `python -m generator run --strict`, residual "
            "check at every block (tests/architectures/)")
SOURCE_READ = ("wiring read from the transformers 5.24 source and checked numerically against "
               "`output_hidden_states` with hooks on tiny random models")


@dataclass(frozen=True)
class Refusal:
    """A configuration the capture cannot read faithfully: loading stops with `reason` and `fix`."""

    condition: str
    """The configuration in words, e.g. `do_layer_norm_before = False`."""
    when: Callable[[Any], bool]
    """Reads the config: True means refuse."""
    reason: str
    fix: str


@dataclass(frozen=True)
class Architecture:
    """Where a family's blocks read and write the residual stream (see the module docstring)."""

    name: str
    """The family, as the site names it."""
    model_types: tuple[str, ...]
    """`config.model_type` values this declaration wires."""
    blocks: str = "layers"
    """The block list, relative to the base model `AutoModel` loads (no LM head)."""
    norm_attn: Path = "input_layernorm"
    """Norm before attention (captured as `norm_attn`)."""
    attn: str = "self_attn"
    """Attention module: its output (`[0]` of a tuple) is what the branch adds, unless
    `attn_post_norm` is set."""
    attn_post_norm: str | None = None
    """Sandwich blocks: the norm applied to the attention output; its output is what is added."""
    norm_mlp: Path = "post_attention_layernorm"
    """Norm before the MLP (captured as `norm_mlp`; in sequential blocks its input is the
    mid-block residual). May be the same module as `norm_attn` in parallel blocks."""
    mlp: str = "mlp"
    """MLP (or whole MoE block): its output is what the branch adds, unless `mlp_post_norm`."""
    mlp_post_norm: str | None = None
    norm_final: str = "norm"
    """The model's final norm, after the last block."""
    parallel: bool | tuple[str, ...] = False
    """Parallel block (out = x + attn + mlp, no mid-block residual), or the config flags that
    make it parallel when any of them is true."""
    residual_scale: str | None = None
    """Config attribute multiplying both contributions before the add (Granite)."""
    embed_scale: str = ""
    """How the embedding is scaled, in words (informational: `embed` is the block-0 input)."""
    pos_embed: str | None = None
    """The learned position table (a module with `.weight`), or None."""
    pos_offset: int = 0
    """Table row of position 0 (OPT: 2)."""
    position_scheme: str = "rotary"
    """A key of `SCHEMES`."""
    scheme_flags: tuple[tuple[str, str], ...] = ()
    """(config flag, scheme) pairs that override `position_scheme` when the flag is true."""
    clone: tuple[str, ...] = ()
    """Points whose tensor the model later changes in place (Falcon's `mlp_output += ...`)."""
    flattened: tuple[str, ...] = ()
    """Points whose tensor comes shaped (B*T, d) (OPT's MLP branch); viewed as (B, T, d)."""
    refusals: tuple[Refusal, ...] = ()
    examples: tuple[str, ...] = ()
    """Hub ids of this family, for the site (not run here: the hub is not reachable)."""
    verified: tuple[str, ...] = (SOURCE_READ, TINY_RUN)
    note: str = ""
    """Anything else a reader of the site should know about this family."""

    def __post_init__(self) -> None:
        def bad(cause: str) -> AtlasError:
            return AtlasError(f"architecture {self.name!r}", cause,
                              "fix its declaration in generator/architectures/")

        if self.position_scheme not in SCHEMES or any(s not in SCHEMES for _, s in self.scheme_flags):
            raise bad(f"unknown position scheme; use one of {', '.join(SCHEMES)}")
        if (self.pos_embed is None) != (self.position_scheme != "learned"):
            raise bad("a learned position scheme needs `pos_embed` (and only it)")
        if not set(self.clone) | set(self.flattened) <= set(TAPPED):
            raise bad(f"`clone` and `flattened` name capture points among {', '.join(TAPPED)}")

    # -- what the config decides ------------------------------------------------------------

    def is_parallel(self, config: Any) -> bool:
        if isinstance(self.parallel, bool):
            return self.parallel
        return any(bool(getattr(config, flag, False)) for flag in self.parallel)

    def scale(self, config: Any) -> float:
        """The factor on both contributions (1 unless `residual_scale` names a config value)."""
        if self.residual_scale is None:
            return 1.0
        value = getattr(config, self.residual_scale, None)
        if value is None:
            raise ModelLoadError(self.name, f"config has no {self.residual_scale!r}",
                                 "fix `residual_scale` in its declaration")
        return float(value)

    def scheme(self, config: Any) -> str:
        for flag, scheme in self.scheme_flags:
            if getattr(config, flag, False):
                return scheme
        return self.position_scheme

    def position_text(self, config: Any) -> str:
        return SCHEMES[self.scheme(config)]

    def absent(self, config: Any) -> dict[str, str]:
        """Capture points this model's blocks do not have, each with the reason."""
        missing = {"resid_attn": self.is_parallel(config), "norm_attn": self.norm_attn is None,
                   "norm_mlp": self.norm_mlp is None}
        return {p: ABSENT[p] for p, gone in missing.items() if gone}

    def refusal(self, config: Any) -> Refusal | None:
        return next((r for r in self.refusals if r.when(config)), None)

    # -- what the site shows ----------------------------------------------------------------

    def layout(self) -> str:
        """The residual layout in words, config-dependent where the declaration says so."""
        seq = "sequential"
        if self.attn_post_norm or self.mlp_post_norm:
            seq = "sequential, sandwich post-norms" if self.norm_attn else "sequential, post-norms only"
        if self.parallel is True:
            return "parallel" + (" (one shared norm)" if self.norm_attn == self.norm_mlp else "")
        if self.parallel:
            flags = " or ".join(f"`{f}`" for f in self.parallel)
            return f"config-dependent: parallel when {flags}, else {seq}"
        return seq

    def position_summary(self) -> str:
        """The position scheme in words, with the table's path and row offset where there is one."""
        if self.pos_embed:
            offset = f" + {self.pos_offset}" if self.pos_offset else ""
            text = f"learned table `{self.pos_embed}` (row = position{offset})"
        else:
            text = self.position_scheme
        return text + "".join(f", {s} when `{flag}`" for flag, s in self.scheme_flags)

    def formula(self) -> str:
        """The residual update with this declaration's module names (`|`: first present)."""
        def call(path: Path, arg: str) -> str:
            name = path if isinstance(path, str) or path is None else "|".join(path)
            return f"{name}({arg})" if name else arg

        r = f"{self.residual_scale}·" if self.residual_scale else ""

        def attn(x: str) -> str:
            return r + call(self.attn_post_norm, call(self.attn, call(self.norm_attn, x)))

        def mlp(x: str) -> str:
            return r + call(self.mlp_post_norm, call(self.mlp, call(self.norm_mlp, x)))

        seq = f"h = x + {attn('x')}; out = h + {mlp('h')}"
        par = f"out = x + {attn('x')} + {mlp('x')}"
        if self.parallel is True:
            return par
        return f"{par} if parallel, else {seq}" if self.parallel else seq

    # -- modules of a loaded model (torch objects, but no torch import) ---------------------

    def n_blocks(self, model: torch.nn.Module) -> int:
        return len(model.get_submodule(self.blocks))

    def block(self, model: torch.nn.Module, i: int) -> torch.nn.Module:
        return model.get_submodule(self.blocks)[i]

    def find(self, root: torch.nn.Module, path: Path) -> torch.nn.Module | None:
        """The module at `path` under `root` (the first candidate present), or None."""
        for p in (path,) if isinstance(path, str) else path or ():
            try:
                return root.get_submodule(p)
            except AttributeError:  # missing, or an attribute set to None (StableLM, OPT)
                continue
        return None

    def module(self, model: torch.nn.Module, name: str, i: int | None = None) -> torch.nn.Module:
        """The module declared as `name` in block `i` (or in the model when `i` is None)."""
        root = self.block(model, i) if i is not None else model
        found = self.find(root, getattr(self, name))
        if found is None:
            where = f"block {i}" if i is not None else "the model"
            raise AtlasError(self.name, f"{name} = {getattr(self, name)!r} is not a module of {where}",
                             "the declaration in generator/architectures/ does not match this "
                             "model: fix its module paths")
        return found

    def position_table(self, model: torch.nn.Module) -> torch.Tensor | None:
        """Rows of the learned position table for positions 0, 1, ... (the offset skipped), or None."""
        if self.pos_embed is None:
            return None
        return model.get_submodule(self.pos_embed).weight[self.pos_offset:]


@cache
def registry() -> dict[str, Architecture]:
    """model_type -> declaration, from every module of this package."""
    found: dict[str, Architecture] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = f"{__name__}.{info.name}"
        family = getattr(importlib.import_module(module), "FAMILY", None)
        if not isinstance(family, Architecture):
            raise AtlasError(f"{module.replace('.', '/')}.py",
                             "defines no `FAMILY = Architecture(...)`",
                             "see generator/architectures/gpt2.py for the form")
        for t in family.model_types:
            if t in found:
                raise AtlasError(f"{module.replace('.', '/')}.py",
                                 f"model_type {t!r} is already wired by {found[t].name}",
                                 "declare each model_type in one family only")
            found[t] = family
    return found


def supported() -> list[str]:
    return sorted(registry())


def families() -> list[Architecture]:
    """Each declaration once, by name."""
    return sorted({id(f): f for f in registry().values()}.values(), key=lambda f: f.name)


def for_config(config: Any, model_name: str = "model") -> Architecture:
    """The declaration wiring `config`, or a `ModelLoadError` (unknown type, refused layout)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in registry():
        raise ModelLoadError(
            model_name,
            f"architecture {model_type!r} has no capture declaration",
            f"use a model of a supported type ({', '.join(supported())}) or add one file "
            "declaring it in generator/architectures/",
        )
    family = registry()[model_type]
    refused = family.refusal(config)
    if refused is not None:
        raise ModelLoadError(model_name, f"{family.name} with {refused.condition} is not supported: "
                             f"{refused.reason}", refused.fix)
    return family
