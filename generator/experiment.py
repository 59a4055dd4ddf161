"""What an experiment is: one module in `generator/experiments/` that declares everything about itself.

A module there defines `EXPERIMENT = Experiment(...)`: its name, title and page text (the module
docstring), the input modes it reads, its parameters, the reducers it needs (`needs`), how the
finalized reducers become metrics and tables (`compute`, the only part that may touch torch,
and only lazily), how tables become Vega-Lite charts (`charts`), what each metric means, which
metrics are headline numbers, and which claims the paper makes about them. The registry finds
every module by itself: nothing else lists experiments.

This module never imports torch: the renderer discovers experiments through it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from generator.errors import AtlasError

MODES = ("text", "repeat", "singular")
"""Input modes: text windows, repeated-token sequences, every vocabulary id alone."""


@dataclass(frozen=True)
class Headline:
    """A metric shown on the home page, in every model's row."""

    metric: str
    label: str


@dataclass(frozen=True)
class Claim:
    """A finding of the paper, checked as `metric >= threshold`; the threshold lives in `[claims]`."""

    metric: str
    threshold: str
    """Key in the suite's `[claims]` table."""
    default: float
    text: str
    """The claim in words; `{t}` is replaced by the threshold."""
    where: Callable[[Result, float], str] | None = None
    """Optional: where the claim holds, in words, from the stored result and the threshold in
    effect (for a per-block pattern: how many blocks reach it, from which block); shown beside
    the verdict, so a pooled number never hides where it fails."""


@dataclass(frozen=True)
class Comparison:
    """A per-block curve drawn for every model on one relative-depth axis (the Compare page).

    `rows(result)` returns `{"block": int, "value": float}` rows, optionally with a `series`
    (e.g. "position 0" and "other positions"); blocks are mapped to relative depth
    (block / (blocks - 1), 0 to 1) so models of different depths share the axis.
    """

    name: str
    title: str
    y_title: str
    rows: Callable[[Result], list[dict[str, Any]]]
    log_y: bool = False


@dataclass(frozen=True)
class MiddleParams:
    """Parameters shared by experiments that average one capture point over the middle blocks."""

    point: str = "resid_mlp"
    """Capture point read (see the methods page for the names)."""
    middle_fraction: float = 0.6
    """Share of depth, centered, that counts as the middle blocks."""


@dataclass
class Context:
    """What an experiment may know about the model and run; no hidden globals."""

    model_name: str
    n_blocks: int
    d_model: int
    seed: int
    seq_len: dict[str, int]
    n_samples: dict[str, int]
    tokenizer: Any
    model: Any
    architecture: Any
    capture: Any
    """The suite's `[capture]` options."""
    input_labels: dict[str, list[str]] = field(default_factory=dict)
    valid_tokens: dict[str, int] = field(default_factory=dict)
    """Non-padding tokens each input mode will run."""
    absent_points: dict[str, str] = field(default_factory=dict)
    """Capture points this model's blocks do not have, with the reason (`resid_attn` of a
    parallel block): they never reach a reducer, so experiments leave their sites out."""
    cov_matmul: str = "float32"
    """The covariance products' dtype for this run: `capture.cov_matmul` with `auto` resolved
    for the capture device by the driver (`reducers.covariance.products_dtype`)."""

    def population(self, mode: str, n_sites: int) -> int:
        """(site, token) pairs a reducer over `n_sites` sites will see: sizes reservoir intake."""
        return n_sites * self.valid_tokens.get(mode, 0)

    def token_text(self, ids: Any) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]


@dataclass
class Result:
    """What `compute` returns and the artifact store keeps: everything the charts and page need.

    `tables` are lists of row dicts (or DataFrames); `facts` are small JSON values the charts'
    titles and the page text use (blocks shown, totals, explained variance).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def frame(self, name: str) -> Any:
        """Table `name` as a pandas DataFrame."""
        import pandas as pd

        t = self.tables[name]
        return t if isinstance(t, pd.DataFrame) else pd.DataFrame(t)


@dataclass(frozen=True)
class ChartView:
    """How charts are drawn for one model: caps and labels that do not change any number."""

    model: str
    seed: int
    max_chart_points: int = 4000
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """The suite's claim thresholds in effect (`[claims]`), for charts that draw one."""


Needs = dict[str, dict[str, Any]]
"""Per input mode, named reducers."""


def never(ctx: Context, params: Any) -> str | None:
    """Default `skip`: the experiment applies to every model."""
    return None


@dataclass(frozen=True)
class Experiment:
    """The whole declaration of one experiment (see the module docstring)."""

    name: str
    title: str
    doc: str
    modes: tuple[str, ...]
    params: type
    """A frozen dataclass; its fields are the suite's `[experiments.NAME]` keys."""
    needs: Callable[[Context, Any], Needs]
    compute: Callable[[Context, Any, Needs], Result]
    charts: Callable[[Result, ChartView], Mapping[str, Any]]
    metrics: Mapping[str, str]
    """Every metric `compute` returns, with its meaning in words."""
    order: int = 100
    """Position in the site's navigation (then by name)."""
    headlines: tuple[Headline, ...] = ()
    claims: tuple[Claim, ...] = ()
    tables: tuple[str, ...] = ()
    """Tables shown on the page (all tables are stored and downloadable)."""
    skip: Callable[[Context, Any], str | None] = never
    """Why the experiment does not apply to a model (shown as "not applicable"), or None."""
    empty_note: str = ""
    """Shown on the page when no model of the build has a result for it: what the page would
    show, why it is empty and where to see it (Markdown)."""
    paper_figures: Mapping[str, str] = field(default_factory=dict)
    """Chart name -> the paper's figure it redraws, in words (the methods page maps them; a
    chart not listed is this report's own addition)."""
    comparisons: tuple[Comparison, ...] = ()
    """Per-block curves the Compare page draws across models."""
    module: str = ""
    """The declaring module (set by the registry; the cache digests its compute path)."""


PACKAGE = "generator.experiments"


def _problem(module: str, what: str) -> AtlasError:
    return AtlasError(f"{module.replace('.', '/')}.py", what,
                      "see `generator/experiment.py` for what an experiment declares")


def check(exp: Any, module: str) -> Experiment:
    """Reject an incomplete or inconsistent declaration, naming the module and what is wrong."""
    if not isinstance(exp, Experiment):
        raise _problem(module, "defines no `EXPERIMENT = Experiment(...)`")
    if not exp.name.isidentifier():
        raise _problem(module, f"name {exp.name!r} is not a plain identifier")
    if not exp.title.strip() or not exp.doc.strip():
        raise _problem(module, "needs a title and a module docstring (the page's text)")
    if not exp.modes or set(exp.modes) - set(MODES):
        raise _problem(module, f"modes {exp.modes!r} must be a non-empty subset of {MODES}")
    if not (dataclasses.is_dataclass(exp.params) and exp.params.__dataclass_params__.frozen):
        raise _problem(module, "params must be a frozen dataclass")
    for f in ("needs", "compute", "charts", "skip"):
        if not callable(getattr(exp, f)):
            raise _problem(module, f"`{f}` is not a function")
    named = [h.metric for h in exp.headlines] + [c.metric for c in exp.claims]
    unknown = [m for m in named if m not in exp.metrics]
    if unknown:
        raise _problem(module, f"headline or claim names metric {unknown[0]!r}, which "
                       "`metrics` does not declare")
    return exp


@cache
def registry() -> dict[str, Experiment]:
    """Every experiment module in `generator/experiments/`, in navigation order."""
    package = importlib.import_module(PACKAGE)
    found: dict[str, Experiment] = {}
    where: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = f"{PACKAGE}.{info.name}"
        exp = check(getattr(importlib.import_module(module), "EXPERIMENT", None), module)
        if exp.name in found:
            raise _problem(module, f"experiment name {exp.name!r} is already taken by "
                           f"{where[exp.name]}.py")
        found[exp.name] = dataclasses.replace(exp, module=module)
        where[exp.name] = module.replace(".", "/")
    thresholds: dict[str, float] = {}
    for exp in found.values():
        for c in exp.claims:
            if thresholds.setdefault(c.threshold, c.default) != c.default:
                raise _problem(f"{PACKAGE}.{exp.name}", f"claim threshold {c.threshold!r} has "
                               "a different default in another experiment")
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def claim_defaults() -> dict[str, float]:
    """Every `[claims]` threshold any experiment declares, with its default."""
    return {c.threshold: c.default for e in registry().values() for c in e.claims}
