"""`make bench`: performance measured side by side in one run, printed as ratios.

Ratios are medians of paired, interleaved repetitions (forward, then capture, then forward...),
so machine noise hits both sides alike. Memory is peak RSS of separate subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator import architectures
from generator.capture.batch import Batch
from generator.experiment import Context, registry
from generator.reducers.states import share_identical
from generator.suite import CaptureOptions


def gpt2_small(device: str = "cpu") -> Any:
    """A GPT-2-small-shaped model with random weights: same cost as the real one."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    return GPT2Model(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024)).eval().to(device)


def smollm2_shaped(device: str = "cpu") -> Any:
    """SmolLM2-135M's shape with random weights, for machines without the embedded package."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=8192, tie_word_embeddings=True)
    return LlamaModel(cfg).eval().to(device)


def llama7b_shaped(device: str = "cuda") -> Any:
    """LLaMA-7B's shape with random bfloat16 weights, made on `device`.

    Made there in bfloat16 directly: 6.7B float32 weights initialized on a CPU take minutes and
    27 GB. For the GPU bench: the paper's largest model, at its 2048 tokens.
    """
    from transformers import LlamaModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return LlamaModel(llama7b_config()).eval()
    finally:
        torch.set_default_dtype(default)


def note(text: str) -> None:
    """Progress on stderr: the bench takes minutes and prints its table only at the end."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def suite_reducers(model: Any, n_samples: int, seq_len: int, cov_every: int = 8,
                   options: CaptureOptions | None = None, mode: str = "text") -> list:
    """The reducers every default-suite experiment asks for in `mode`.

    `n_samples` samples of `seq_len` tokens (`singular`: one token per sample, a vocabulary).
    """
    from generator.reducers.covariance import products_dtype

    adapter = architectures.for_config(model.config)
    options = options or CaptureOptions(cov_every=cov_every)
    seq = {"text": seq_len, "repeat": 8, "singular": 1}
    count = {"text": 1, "repeat": 1, "singular": 1, mode: n_samples}
    ctx = Context("bench", adapter.n_blocks(model), int(model.config.hidden_size), 42, seq, count,
                  None, model, adapter, options,
                  input_labels={"repeat": ["x"]},
                  valid_tokens={m: count[m] * seq[m] for m in seq},
                  cov_matmul=products_dtype(options.cov_matmul, next(model.parameters()).device))
    needs = [exp.needs(ctx, p) for exp in registry().values()
             if exp.skip(ctx, p := exp.params()) is None]
    return share_identical(needs).get(mode, [])  # as a run: one reducer per statistic


class SeedStyle:
    """The paper's approach: every hooked output copied to the CPU, stacked after the forward."""

    def __init__(self, model: Any) -> None:
        a = architectures.for_config(model.config)
        self.mods = [a.module(model, n, i) for i in range(a.n_blocks(model))
                     for n in ("norm_attn", "attn", "norm_mlp", "mlp")] + [a.module(model, "norm_final")]
        self.kept: list[torch.Tensor] = []

    def __enter__(self) -> SeedStyle:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            self.kept.append((out[0] if isinstance(out, tuple) else out).detach().cpu().clone())
        self.handles = [m.register_forward_hook(hook) for m in self.mods]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        torch.stack(self.kept)
        self.kept.clear()


PARTS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "covariance products": (("reducers.covariance", "Covariance", ("_add_pool",)),),
    "covariance rows, weights and folds": (
        ("reducers.covariance", "Covariance", ("update", "begin_batch", "end_batch", "reset",
                                               "_fold")),),
    "covariance merges": (("reducers.covariance", "Covariance", ("merge",)),),
    "mean sums": (("reducers.means", "MeanState", ("update", "end_batch", "reset")),),
    "mean merges": (("reducers.means", "MeanState", ("merge",)),),
    "norms of every state, and their statistics": (
        ("reducers.norms", "NormStats", ("update", "end_batch", "reset", "merge")),
        ("reducers.sample_norms", "SampleNorms", ("update", "end_batch", "reset", "merge"))),
    "reservoirs": (("reducers.reservoir", "Reservoir", ("update", "begin_batch", "end_batch",
                                                        "reset", "merge")),),
    "residual check": (("capture.hooks", "", ("residual_gap",)),),
}
"""The parts of a capture the bench times inside it: (module in `generator`, class or "" for
the module's own functions, methods) per part. A method's time excludes the parts it calls
(the products inside `Covariance.update`, a fold inside a merge); the states' norms
(`State.norms2d`, computed once per state for every reducer) count as norms whichever reducer
asks first. The rest of a capture (hooks, the executor) is what the forward and these leave."""
PASS_PARTS = ("covariance products", "mean sums", "mean merges",
              "norms of every state, and their statistics")
"""Parts that are arithmetic or passes over memory fixed by the statistics themselves: the
products' FLOPs (rows x d^2 at the sample rate: at this CPU's float32 peak, measured) and the
bytes of every state (one norm each) and of the means' sums by position (a read-modify-write
per batch, and the float64 totals' per shard: at about the machine's copy bandwidth). What
their measured time leaves of a forward bounds capture / forward even if hooks, row gathers,
reservoirs and everything else cost nothing (their own dispatch, a few us per call, is in it)."""


class PartsTimer:
    """Time spent in each of `PARTS` while active, exclusive of the nested parts.

    On the CPU ops are synchronous, so wall time is the work. One dict of seconds per part per
    activation in `per_call`; `pool` is the covariance products' (`Covariance._add_pool`:
    centering, weighting and the product of the pooled rows). Its share of a forward bounds
    the ratio whatever the rest of capture costs: capture / forward <= 1 / (1 + share).
    """

    def __init__(self) -> None:
        self.per_call: list[dict[str, float]] = []

    @property
    def pool(self) -> list[float]:
        return [c["covariance products"] for c in self.per_call]

    def __enter__(self) -> PartsTimer:
        import functools
        import importlib

        from generator.capture.batch import State

        spent = dict.fromkeys(PARTS, 0.0)
        stack: list[float] = []  # per open timed call: the time its timed callees took

        def timed(fn: Any, part: str) -> Any:
            @functools.wraps(fn)
            def call(*a: Any, **k: Any) -> Any:
                stack.append(0.0)
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    dt = time.perf_counter() - t0
                    spent[part] += dt - stack.pop()
                    if stack:
                        stack[-1] += dt
            return call

        self._undo: list[tuple[Any, str, Any]] = []  # (owner, name, what its __dict__ held)
        for part, places in PARTS.items():
            for module, cls_name, methods in places:
                mod = importlib.import_module(f"generator.{module}")
                owner = getattr(mod, cls_name) if cls_name else mod
                for m in methods:
                    self._undo.append((owner, m, owner.__dict__.get(m)))
                    setattr(owner, m, timed(getattr(owner, m), part))
        norms = State.__dict__["norms2d"]
        prop = functools.cached_property(timed(norms.func,
                                               "norms of every state, and their statistics"))
        prop.__set_name__(State, "norms2d")
        self._undo.append((State, "norms2d", norms))
        State.norms2d = prop  # type: ignore[method-assign,assignment]
        self._spent = spent
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, held in reversed(self._undo):
            if held is None:
                delattr(owner, name)  # it was inherited: the base's method shows through again
            else:
                setattr(owner, name, held)
        self.per_call.append(dict(self._spent))


def paired_ratio(model: Any, ids: torch.Tensor, batch_size: int, reducers_fn: Any,
                 reps: int = 5, seed: bool = True) -> dict[str, Any]:
    """Forward-only vs capture through the runner's shard executor, on the same batches.

    `ids` is one shard of input (at most `shard_batches` batches) and every repetition is one
    more shard of a long run: capture includes everything a run pays per shard (updates, the
    merge into the float64 totals, the reset of the shard buffers, covariance folds). What a
    run pays once (allocating the states) is paid in the warm-up. Medians of paired,
    interleaved repetitions, so machine noise hits both sides alike. The repetitions offer the
    same samples again, so the run's total reservoir takes in no new rows after the first (a
    (key, site) pair is kept once): its merge is the key sort alone, where a real next shard
    also copies the rows that enter (those of its own k / shards or so that beat the total).

    On the CPU it also times the parts of the capture inside its repetitions (`PartsTimer`):
    `parts_seconds` (median seconds per part) and `pool_seconds` (the covariance products), to
    set against `forward_seconds`.

    With `seed`, the paper-style capture is then paired with the forward in repetitions of its
    own. It copies every hooked output (hundreds of MB, freed after each pass); interleaved with
    ours, every capture shard ran in a heap shaped by those copies, which a run never has.

    Medians, and for the ratios their lowest and highest repetition (`capture_range`,
    `seed_range`): the spread within one run, which a reader needs beside a target of 0.95.
    Per pass, the minor page faults and the system time of forward and capture alike
    (`forward_page_faults`, `capture_system_seconds`...): on this project's VMs a process
    whose heap top glibc trims inside the capture (above its 64 MB trim threshold) faults the
    forward's next temporaries back in (up to 180k faults, 0.05-0.1 s of system time, per SmolLM2
    4 x 512 shard), and its ratios come out 0.02-0.04 lower than those of a process that does not;
    which kind a process is varies from run to run. These numbers say which kind it was.
    """
    from generator.executors import Local
    from generator.inputs import TokenInputs

    device = next(model.parameters()).device
    ids = ids.to(device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    inputs = TokenInputs("text", ids, mask, batch_size)
    batches = list(inputs.batches())
    adapter = architectures.for_config(model.config)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)

    reducers = reducers_fn()
    executor = Local(model, adapter, device, len(batches), progress=False)

    def ours() -> None:  # reading the totals (`arrays()`) is once per run, not per shard
        executor.capture(inputs, reducers, "b")

    def seed_style() -> None:
        with SeedStyle(model), torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)

    faults: dict[str, list[float]] = {}

    def timed(f: Any) -> float:
        sync()
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        f()
        sync()
        t = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
        side = "capture" if f is ours else "forward"
        faults.setdefault(f"{side}_page_faults", []).append(after.ru_minflt - before.ru_minflt)
        faults.setdefault(f"{side}_system_seconds", []).append(after.ru_stime - before.ru_stime)
        return t

    out: dict[str, list[float]] = {"capture": [], "capture_seconds": [], "forward_seconds": []}
    for f in (plain, ours):
        f()  # warm-up
    parts = PartsTimer() if device.type == "cpu" else None
    for _ in range(reps):
        base = timed(plain)
        with parts or contextlib.nullcontext():
            t = timed(ours)
        out["capture"].append(base / t)
        out["capture_seconds"].append(t)
        out["forward_seconds"].append(base)
    out.update({k: list(v) for k, v in faults.items()})  # these only: paper-style passes follow
    if parts is not None:
        out["pool_seconds"] = parts.pool
    if seed:
        seed_style()  # warm-up
        out["seed"] = []
        for _ in range(reps):
            base = timed(plain)
            out["seed"].append(base / timed(seed_style))
    res: dict[str, Any] = {k: statistics.median(v) for k, v in out.items()}
    if parts is not None:
        res["parts_seconds"] = {p: statistics.median(c[p] for c in parts.per_call) for p in PARTS}
    for k in ("capture", "seed"):  # the spread within the run, beside its median
        if k in out:
            res[f"{k}_range"] = [round(min(out[k]), 3), round(max(out[k]), 3)]
    return res


NO_KERNEL = frozenset(f"aten::{n}" for n in (
    "as_strided", "view", "reshape", "select", "slice", "unsqueeze", "squeeze", "narrow", "expand",
    "empty", "empty_strided", "empty_like", "resolve_conj", "resolve_neg", "lift_fresh", "alias",
    "detach", "t", "transpose", "permute", "_reshape_alias", "_unsafe_view", "view_as", "flatten",
    "split", "chunk", "unbind", "numpy_T", "to", "_to_copy", "contiguous", "clone", "result_type",
    "scalar_tensor", "dim", "item", "_local_scalar_dense", "is_nonzero"))
"""Operators that launch no kernel of their own (views, allocations) or only through the
operators they call (conversions, copies), which the profiler records as their children."""


def is_kernel(e: Any) -> bool:
    """A profiler event that would be one device kernel: a leaf among computing operators."""
    if not e.name.startswith("aten::") or e.name in NO_KERNEL:
        return False
    return not any(c.name.startswith("aten::") and c.name not in NO_KERNEL for c in e.cpu_children)


SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero",
            "aten::masked_select", "aten::unique", "aten::equal")
"""Operators that make the host wait for the device (on CUDA); `nonzero_static` does not."""


def profile_capture(model: Any, shape: tuple[int, int, int], every: int = 8,
                    pool_bytes: int | None = None) -> dict[str, float]:
    """Per batch, inside the capture loop: operators and host syncs beyond the forward's own.

    Torch profiler on the CPU, default suite's reducers, `shape` = (samples, tokens, batch size),
    one shard. The covariances' row pools are a GPU's (`Covariance.GPU_POOL_BYTES`) unless
    `pool_bytes` says otherwise: these counts stand for the kernel launches a GPU would make,
    and the CPU's smaller pools make more, smaller products per batch. The loop is what runs
    per batch (hooks, deferred residual check, reducer updates, `end_batch`); the
    once-per-shard part (`verify`, `regrow`, the merge) is counted apart. Host
    copies are `.cpu()`/`.numpy()` calls on tensors (on CUDA each would be a device-to-host copy);
    the batch's own host copy (`Batch.host`) is left out.
    """
    import collections

    from torch.profiler import ProfilerActivity, profile

    from generator.capture.hooks import Capture
    from generator.executors import capture_shard
    from generator.inputs import TokenInputs
    from generator.reducers.covariance import Covariance

    n, t, bs = shape
    ids = torch.randint(0, int(model.config.vocab_size), (n, t))
    inputs = TokenInputs("text", ids, torch.ones_like(ids, dtype=torch.bool), bs)
    batches = list(inputs.batches())
    adapter = architectures.for_config(model.config)
    cpu_pool = Covariance.POOL_BYTES
    Covariance.POOL_BYTES = pool_bytes or Covariance.GPU_POOL_BYTES  # read when they are made
    try:
        reducers = suite_reducers(model, n, t, every)
    finally:
        Covariance.POOL_BYTES = cpu_pool

    def loop() -> None:
        with Capture(model, adapter, reducers, deferred=True) as cap:
            for b in batches:
                cap.run(b)
            loop.cap = cap  # type: ignore[attr-defined]

    def per_shard() -> None:
        loop.cap.verify()  # type: ignore[attr-defined]
        for r in reducers:
            getattr(r, "regrow", lambda: False)()
            r.arrays()
            r.reset()

    def forward() -> None:
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)

    def count(fn: Any) -> tuple[collections.Counter, collections.Counter, int]:
        calls: collections.Counter = collections.Counter()
        orig = torch.Tensor.numpy, torch.Tensor.cpu

        def wnp(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            code = sys._getframe(1).f_code  # not the batch's own host copy (`Batch.host`)
            if not code.co_filename.endswith("batch.py"):
                calls["host_copies"] += 1
            return orig[0](self, *a, **k)

        def wcpu(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            calls["host_copies"] += 1
            return orig[1](self, *a, **k)

        torch.Tensor.numpy, torch.Tensor.cpu = wnp, wcpu  # type: ignore[method-assign]
        try:
            with profile(activities=[ProfilerActivity.CPU]) as p:
                fn()
        finally:
            torch.Tensor.numpy, torch.Tensor.cpu = orig  # type: ignore[method-assign]
        ops = collections.Counter({e.key: e.count for e in p.key_averages()})
        return ops, calls, sum(1 for e in p.events() if is_kernel(e))

    capture_shard(model, adapter, inputs, reducers, "cpu")  # warm-up (and any regrow)
    for r in reducers:
        r.arrays()
        r.reset()
    fwd, _, kf = count(forward)
    cap, cap_calls, kc = count(loop)
    shard, shard_calls, _ = count(per_shard)
    nb = len(batches)
    return {"ops_forward": sum(fwd.values()) / nb, "ops_capture_extra": (sum(cap.values())
            - sum(fwd.values())) / nb,
            "kernel_ops_forward": kf / nb, "kernel_ops_capture_extra": (kc - kf) / nb,
            "syncs_per_batch": sum(cap[k] - fwd[k] for k in SYNC_OPS) / nb,
            "host_copies_per_batch": cap_calls["host_copies"] / nb,
            "syncs_per_shard": sum(shard[k] for k in SYNC_OPS),
            "host_copies_per_shard": shard_calls["host_copies"]}


def pca_vs_sklearn(n: int = 100_000, d: int = 768) -> dict[str, float]:
    from sklearn.decomposition import PCA

    from generator.analysis import pca
    from generator.capture.batch import State
    from generator.capture.sites import Site
    from generator.reducers.covariance import Covariance

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, 64)) @ rng.standard_normal((64, d)) + rng.standard_normal((n, d))
         + 3.0).astype(np.float32)
    site = Site(1, "attn", 0)
    t0 = time.perf_counter()
    cov = Covariance([site], d)
    for chunk in np.array_split(x, n // 1000):
        h = torch.from_numpy(chunk).unsqueeze(0)
        cov.update(State(site, h, Batch(torch.zeros(1, len(chunk), dtype=torch.long),
                                        torch.ones(1, len(chunk), dtype=torch.bool), torch.zeros(1).long())))
    ours = pca.from_covariance(cov.state["mean"], cov.covariance(), 10)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = PCA(10, svd_solver="full").fit(x.astype(np.float64))
    t_ref = time.perf_counter() - t0
    diff = np.abs(ours.explained_variance_ratio - ref.explained_variance_ratio_).max()
    return {"pca_vs_sklearn_time": t_ours / t_ref, "pca_max_evr_diff": float(diff)}


def pca_sampled_vs_exact(loaded: Any, every: int = 8) -> dict[str, float]:
    """What `cov_every` and `cov_matmul` cost in accuracy, on real SmolLM2 states and text.

    On the default suite's text at its size (`suite.toml`'s inputs; 2,048 tokens before
    2026-11-28 10:10), with position 0 and massive tokens left out as the suite's experiments
    do (`drop_above`; kept before then, so raw outputs' top components were the massive ones).
    The reference is the exact covariance in float32 products. Against it: the default (1 in
    `every` tokens, raw: norm-stratified, units: uniform; products as `cov_matmul = "auto"`
    picks on this CPU), for middle attn/MLP outputs (raw) and residuals (unit vectors); the
    plain uniform sample on raw outputs, to show why stratification is the default there; and
    every token with bfloat16 products, to show what that precision costs on its own. Leading
    two explained-variance ratios, the smallest principal cosine between the top-2 and the
    top-10 subspaces, and the covariance's relative (Frobenius) error.
    """
    from generator.analysis import outliers, pca
    from generator.capture.sites import COMPONENT_POINTS, RESIDUAL_POINTS, all_sites, middle_blocks
    from generator.executors import Local
    from generator.inputs import build_inputs
    from generator.reducers.covariance import Covariance, products_dtype
    from generator.suite import Inputs, load_suite

    model, tok = loaded.model, loaded.tokenizer
    adapter = architectures.for_config(model.config)
    n, d = adapter.n_blocks(model), int(model.config.hidden_size)
    text = Path("suite.toml")  # the default suite's text at its size (64 x 256 tokens)
    shape = load_suite(text).inputs if text.is_file() else Inputs()
    inputs = build_inputs("text", tok, shape, None, int(model.config.vocab_size))
    mids = middle_blocks(n)
    raw = [s for s in all_sites(n) if s.point in COMPONENT_POINTS and s.block in mids]
    resid = [s for s in all_sites(n) if s.point in RESIDUAL_POINTS]
    keep = CaptureOptions().cov_keep_above
    auto = products_dtype(CaptureOptions().cov_matmul, "cpu")  # the default's products here
    # as the suite's experiments make them: position 0 and massive tokens left out
    common = {"min_position": 1, "drop_above": outliers.FACTOR}
    raw_exact = Covariance(raw, d, **common)  # every token, float32 products: the reference
    unit_exact = Covariance(resid, d, unit=True, **common)
    covs = {f"pca_every{every}_attn_mlp_raw": (raw_exact, Covariance(
                raw, d, every=every, keep_above=keep, matmul_dtype=auto, **common)),
            f"pca_every{every}_attn_mlp_raw_uniform": (raw_exact, Covariance(
                raw, d, every=every, matmul_dtype=auto, **common)),
            f"pca_every{every}_residual_unit": (unit_exact, Covariance(
                resid, d, unit=True, every=every, matmul_dtype=auto, **common)),
            "pca_bf16_products_attn_mlp_raw": (raw_exact, Covariance(
                raw, d, matmul_dtype="bfloat16", **common)),
            "pca_bf16_products_residual_unit": (unit_exact, Covariance(
                resid, d, unit=True, matmul_dtype="bfloat16", **common))}
    Local(model, adapter, "cpu", 4, progress=False).capture(
        inputs, list({id(c): c for pair in covs.values() for c in pair}.values()), "pca")
    res: dict[str, Any] = {"pca_default_products_dtype": auto,
                           "pca_tokens": int(inputs.mask.sum())}
    for g, (ref, c) in covs.items():
        fits = [pca.from_covariance(x.state["mean"], x.covariance(), 10) for x in (ref, c)]
        res[f"{g}_evr_diff"] = float(np.abs(
            fits[0].explained_variance_ratio[:2] - fits[1].explained_variance_ratio[:2]).max())
        top2 = fits[0].components[:2] @ fits[1].components[:2].T
        res[f"{g}_subspace_cos"] = float(np.linalg.svd(top2, compute_uv=False).min())
        top10 = fits[0].components @ fits[1].components.T
        res[f"{g}_subspace_cos_top10"] = float(np.linalg.svd(top10, compute_uv=False).min())
        a, b = ref.covariance(), c.covariance()
        res[f"{g}_covariance_rel_error"] = float(np.linalg.norm(b - a) / np.linalg.norm(a))
    return res


def umap_timing(n: int = 8000, d: int = 576) -> dict[str, Any]:
    """umap-learn at n/4 and n points (after a numba warm-up), for the 100k extrapolation.

    Gaussian points in d dimensions, cosine metric, as the suite's UMAP pages use.
    """
    import umap

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    t0 = time.perf_counter()
    umap.UMAP(metric="cosine", random_state=42, n_jobs=1).fit_transform(x[:200])
    res: dict[str, Any] = {"umap_warmup_seconds": time.perf_counter() - t0}
    for key, m in (("_small", n // 4), ("", n)):
        t0 = time.perf_counter()
        umap.UMAP(metric="cosine", random_state=42, n_jobs=1).fit_transform(x[:m])
        res[f"umap_seconds{key}"], res[f"umap_points{key}"] = time.perf_counter() - t0, m
    return res


def cuml_umap_timing(points: int = 100_000, d: int = 576) -> dict[str, Any]:
    """RAPIDS cuML's GPU UMAP at the paper's 100k points, measured, where cuML is installed.

    Same data kind as `umap_timing`; timed after a warm-up on 1000 points (CUDA context and
    kernels loaded). Without cuML the result says so, and the 100k figure is umap-learn's,
    extrapolated.
    """
    import importlib

    try:
        cuml = importlib.import_module("cuml.manifold")
    except ImportError:
        return {"umap_gpu": "cuML not installed: UMAP at 100k points is umap-learn's, extrapolated"}
    x = np.random.default_rng(1).standard_normal((points, d)).astype(np.float32)
    cuml.UMAP(n_components=2, metric="cosine", random_state=42).fit_transform(x[:1000])
    t0 = time.perf_counter()
    cuml.UMAP(n_components=2, metric="cosine", random_state=42).fit_transform(x)
    return {"umap_gpu": "cuML", "umap_cuml_seconds": time.perf_counter() - t0,
            "umap_cuml_points": points}


def rss_child(n_samples: int, seq_len: int = 1024, batch: int = 4, forward_only: bool = False) -> None:
    """Run in a subprocess: the suite's reducers over n_samples x seq_len, print peak RSS.

    Capture goes through the shard executor the runner uses (fresh state per shard, merged in
    order, large totals spilled to a folder under build/ between shards as a run spills them
    under its artifact folder), so the memory measured is the memory a real run needs,
    reading the totals back included. `by_shard` is the peak so far
    after each shard's merge, keyed by the samples done: growth with the corpus read within one
    process, free of what separate processes differ by (+-150 MB with 32 MB row pools).
    `shard_peaks` is each shard's own peak: it moved by about +-100 MB from shard to shard of
    one run with 32 MB row pools (+-50 MB with 4 MB ones: where the forward's temporaries land
    in the heap), so the peak so far can rise with no state growing.
    """
    from generator.executors import Local
    from generator.fsutil import scratch_dir
    from generator.inputs import TokenInputs
    from generator.memory import reuse_freed_memory

    reuse_freed_memory()  # as the CLI does
    torch.manual_seed(0)
    model = gpt2_small()
    reducers = suite_reducers(model, n_samples, seq_len)
    ids = torch.randint(0, 50257, (n_samples, seq_len))
    inputs = TokenInputs("text", ids, torch.ones_like(ids, dtype=torch.bool), batch)
    if forward_only:
        with torch.inference_mode():
            for b in inputs.batches():
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)
        print(json.dumps({"rss_mb": peak_rss_mb()}))
        return
    done_at: list[int] = []
    shard_peaks: list[float] = []

    def after(done: int) -> None:  # this shard's own peak
        done_at.append(done)
        shard_peaks.append(peak_rss_mb(restart=True))

    peak_before = peak_rss_mb(restart=True)  # the model, the inputs, empty reducers
    with scratch_dir(Path("build"), "spill") as spill:
        Local(model, architectures.for_config(model.config), "cpu", CaptureOptions().shard_batches,
              progress=False, after_shard=after).capture(inputs, reducers, "rss", spill=spill)
        for r in reducers:
            r.arrays()
    so_far = np.maximum.accumulate([peak_before, *shard_peaks])[1:]
    print(json.dumps({"rss_mb": max(peak_before, *shard_peaks, peak_rss_mb()),
                      "by_shard": dict(zip(done_at, so_far.tolist(), strict=True)),
                      "shard_peaks": shard_peaks}))


def peak_rss_mb(restart: bool = False) -> float:
    """Peak RSS of the current process in MB (since exec, or since the last `restart`).

    VmHWM restarts at exec; ru_maxrss would include the parent's pages from before the fork,
    which is all a child of the bench would then report. `restart` resets VmHWM after reading
    it (`/proc/self/clear_refs`), so the next call gives the peak of what ran in between; where
    that is refused, the next call gives the peak so far.
    """
    try:
        peak = next(int(line.split()[1]) / 1024
                    for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if restart:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    return peak


def rss(n: int, forward_only: bool = False) -> dict[str, Any]:
    """`rss_child` in a fresh interpreter: its output (peak MB, and per shard for a capture)."""
    code = f"from generator.bench import rss_child; rss_child({n}, forward_only={forward_only})"
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def suite_timing() -> dict[str, float]:
    import shutil
    import tempfile

    out = Path(tempfile.mkdtemp())
    res = {}
    for key in ("suite_cold_seconds", "suite_warm_seconds"):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "generator", "run", "--suite", "suite.toml", "--out",
                        str(out), "--no-progress", "--models", "smollm2-135m"], check=True,
                       capture_output=True)
        res[key] = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return res


PAPER_RUN_TOKENS = 128 * 1024
"""Tokens of the paper's runs (GPT-2: 128 x 1024; LLaMA: 64 x 2048): the run a timed shard is
one of."""


def ratios(res: dict[str, Any], model: Any, label: str, shape: tuple[int, int, int], vocab: int,
           everies: tuple[int, ...], reps: int, seed: bool = True,
           float32_too: bool = False) -> None:
    """Paired ratios for one shard of `shape` = (samples, tokens, batch size).

    The shard is one of a run at the paper's size (`PAPER_RUN_TOKENS`): the reducers are made
    for that run, as the runner makes them for its own. What a shard does depends on it: the
    reservoir's threshold starts where the whole run's population puts its k rows, so a shard
    of a long run takes in about its share of them. Made for the shard alone, every repetition
    took in all k rows (SmolLM2: 24,000 rows of candidates gathered, sorted and copied per
    shard, a run's whole intake), which no shard of a real run does.

    The CPU bench's shards are one or two batches, where the runner's hold four
    (`capture.shard_batches`): each batch carries two to four times its share of the merge
    into the float64 totals (30-50 ms per SmolLM2 x 512 shard). Timed at the runner's four
    batches (2026-11-28 09:00, 3 repetitions) the ratios were no higher (0.918 / 0.940 / 0.911
    at 1 in 8) and the ratio part of the bench took 7.9 minutes instead of about 4, so the
    shorter shards stay.

    Covariance products are as `capture.cov_matmul = "auto"` picks for the model's device
    (bfloat16 on CPUs with AVX512-BF16 or AMX and on CUDA); with `float32_too` the default
    `cov_every` is also timed with float32 products (`..._float32_products`), for comparison.
    The default `cov_every` gets `reps` repetitions (it is the number the targets are about);
    the others, reported for the choice of default, two (the bench must fit in 15 minutes).
    """
    n, t, bs = shape
    run = max(n, PAPER_RUN_TOKENS // t)
    ids = torch.randint(0, vocab, (n, t))
    runs = [(every, "auto") for every in everies]
    if float32_too:
        runs.append((CaptureOptions().cov_every, "float32"))
    for every, matmul in runs:
        note(f"capture vs forward, {label}, cov_every {every}, products {matmul}")
        default = every == CaptureOptions().cov_every and matmul == "auto"
        opts = CaptureOptions(cov_every=every, cov_matmul=matmul)
        r = paired_ratio(model, ids, bs, lambda o=opts: suite_reducers(model, run, t, options=o),
                         reps=reps if default else 2, seed=default and seed)
        key = f"{label}_cov_every_{every}" + ("_float32_products" if matmul == "float32" else "")
        res[f"capture_vs_forward_{key}"] = r["capture"]
        res[f"capture_vs_forward_{key}_range"] = r["capture_range"]
        if "pool_seconds" in r:  # what the covariance products alone leave of the budget
            share = r["pool_seconds"] / r["forward_seconds"]
            res[f"covariance_products_share_of_forward_{key}"] = share
            res[f"capture_ceiling_from_products_{key}"] = 1 / (1 + share)
        if default and "parts_seconds" in r:
            res[f"capture_parts_ms_per_shard_{key}"] = capture_parts(r)
            passes = sum(r["parts_seconds"][p] for p in PASS_PARTS)
            res[f"capture_ceiling_from_products_and_passes_{key}"] = (
                r["forward_seconds"] / (r["forward_seconds"] + passes))
        if default:  # forward, capture: what separates a low run from a high one
            for k in ("page_faults", "system_seconds"):
                res[f"capture_vs_forward_{key}_{k}"] = [round(r[f"forward_{k}"], 3),
                                                        round(r[f"capture_{k}"], 3)]
        if "seed" in r:
            res[f"seed_style_vs_forward_{label}"] = r["seed"]
            res[f"seed_style_vs_forward_{label}_range"] = r["seed_range"]
            res["_tokens_per_s"] = n * t / r["capture_seconds"]


def capture_parts(r: dict[str, Any]) -> dict[str, float]:
    """Milliseconds per shard: the forward, the capture, each timed part, and what is left.

    All medians over the same paired repetitions; `rest` (hooks, the executor, the Python
    between the parts) is capture minus forward minus the parts, so it also carries the noise
    of the difference of two medians.
    """
    ms = {"forward": r["forward_seconds"] * 1000, "capture": r["capture_seconds"] * 1000}
    parts = {p: s * 1000 for p, s in r["parts_seconds"].items()}
    rest = ms["capture"] - ms["forward"] - sum(parts.values())
    return {k: round(v, 1) for k, v in {**ms, **parts, "rest: hooks, executor": rest}.items()}


def host_overhead_proxy(reps: int) -> dict[str, float]:
    """Capture vs forward where device work is negligible: what per-site host work costs.

    GPT-2-small's depth (12 blocks, so the same sites and the same reducer updates per batch)
    at width 64: its kernels take next to no time, so the capture's extra time is Python, torch
    dispatch and the reservoir's host-side bookkeeping. That is the part that bounds capture on
    a GPU once the forward is fast; it is measured here because no GPU may be at hand.
    """
    from transformers import GPT2Config, GPT2Model

    note("host-overhead proxy: GPT-2 depth at width 64, 4 batches of 8 x 128")
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=12, n_embd=64, n_head=4, n_positions=1024)).eval()
    n, t, bs = 32, 128, 8
    ids = torch.randint(0, 50257, (n, t))
    r = paired_ratio(model, ids, bs, lambda: suite_reducers(model, n, t), reps=reps, seed=False)
    extra = r["capture_seconds"] * (1 - r["capture"]) / (n // bs)
    return {"host_proxy_width64_capture_vs_forward": r["capture"],
            "host_proxy_width64_capture_extra_ms_per_batch": extra * 1000}


def llama7b_config() -> Any:
    """LLaMA-7B's shape (Touvron et al. 2023): 32 blocks of width 4096, MLP 11008, 32k vocab."""
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096)


PAPER_SIZES = {  # label: (model shape, mode, samples, tokens per sample, batch, bytes per weight)
    "gpt2_128x1024": ("gpt2", "text", 128, 1024, 8, 4),
    "llama7b_64x2048_bf16": ("llama7b", "text", 64, 2048, 8, 2),
    "singular_32k_gpt2": ("gpt2", "singular", 32_000, 1, 2048, 4),
    "singular_150k_gpt2": ("gpt2", "singular", 150_000, 1, 2048, 4),
}
"""The paper's sizes: GPT-2 on 128 x 1024 PG-19 tokens, LLaMA-7B on 64 x 2048, and the whole
vocabulary one token at a time (GPT-2's 50k lies between a 32k and a 150k vocabulary)."""


def paper_memory(config: Any, mode: str, n_samples: int, seq_len: int, batch: int,
                 element_size: int) -> dict[str, float]:
    """GB a run at this size holds: weights, the suite's statistics, one forward's activations.

    The statistics are the default suite's reducers for this model and shape, built on a
    weightless (meta-device) model, counted as the runner's pre-flight check counts them on a
    CPU: twice their float64 totals (the totals plus one shard's sums), less the large sum totals
    that wait on disk while the forwards run (`statistics_on_disk_gb`; they come back for the
    analysis, after the forwards). Their arrays are never touched, so building them costs no
    memory. The forward is `memory.forward_bytes` at the suite's batch.
    """
    from transformers import AutoModel

    from generator import memory
    from generator.executors import spilled_bytes

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    reducers = suite_reducers(model, n_samples, seq_len, mode=mode)
    state = sum(r.nbytes() for r in reducers)
    on_disk = spilled_bytes(reducers)
    out = {"weights_gb": params * element_size / 1e9, "statistics_gb": (2 * state - on_disk) / 1e9,
           "forward_gb": memory.forward_bytes(config, batch, seq_len, element_size) / 1e9}
    out["total_gb"] = sum(out.values())
    out["statistics_on_disk_gb"] = on_disk / 1e9
    return out


def extrapolate(res: dict[str, Any], model: Any, tokens_per_s: dict[int, float] | None = None,
                prefix: str = "extrapolated") -> None:
    """The paper's sizes, EXTRAPOLATED (not measured) from the measured throughput.

    Capture time scales with tokens x parameters (forward FLOPs) over the measured tokens/s of
    capture at the GPT-2-small shape. `tokens_per_s` maps bytes per weight to that throughput
    (4: float32, 2: bfloat16; the CPU's one float32 figure, 1 x 1024 rows, serves both); each
    paper size is scaled from the dtype it runs in. Memory is `paper_memory`: the weights, the
    suite's statistics for that model and shape (counted from their arrays, not allocated) and
    one forward's activations. UMAP at 100k points is extrapolated where umap-learn was timed.
    """
    gpt2_params = sum(p.numel() for p in model.parameters())
    cpu = res.get("capture_tokens_per_s_gpt2s_1x1024")
    tok_s = tokens_per_s or {4: cpu, 2: cpu}
    configs = {"gpt2": model.config, "llama7b": llama7b_config()}
    for label, (shape, mode, n, t, batch, bytes_per) in PAPER_SIZES.items():
        mem = paper_memory(configs[shape], mode, n, t, batch, bytes_per)
        params = mem["weights_gb"] * 1e9 / bytes_per
        if tok_s.get(bytes_per):
            res[f"{prefix}_{label}_hours"] = n * t / tok_s[bytes_per] * params / gpt2_params / 3600
        for k, v in mem.items():
            res[f"{prefix}_{label}_{k}"] = v
    if "umap_seconds" not in res:
        return
    x = [res["umap_points_small"], res["umap_points"]]
    y = [res["umap_seconds_small"], res["umap_seconds"]]
    slope = np.log(y[1] / y[0]) / np.log(x[1] / x[0])
    res[f"{prefix}_umap_100k_seconds"] = y[1] * (100_000 / x[1]) ** slope


def main(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    if device == "cuda":
        return main_cuda(quick)
    started = time.perf_counter()
    torch.set_num_threads(torch.get_num_threads())
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                           f"torch {torch.__version__}"}
    model = gpt2_small()
    reps = 3 if quick else 5
    everies = (8,) if quick else (1, 8)
    note("profiler: operators and host syncs per batch in the capture loop")
    for label, shape in (("gpt2s_8x128", (16, 128, 8)), ("gpt2s_1x1024", (2, 1024, 1))):
        for k, v in profile_capture(model, shape).items():
            res[f"profile_{label}_{k}"] = v
    from generator.reducers.covariance import Covariance, products_dtype

    cpu = profile_capture(model, (16, 128, 8), pool_bytes=Covariance.POOL_BYTES)
    for k in ("ops_capture_extra", "kernel_ops_capture_extra"):  # what this CPU runs
        res[f"profile_gpt2s_8x128_{k}_cpu_pools"] = cpu[k]

    res["covariance_products_dtype"] = products_dtype(CaptureOptions().cov_matmul, "cpu")
    both = res["covariance_products_dtype"] != "float32" and not quick
    ratios(res, model, "gpt2s_8x128", (16, 128, 8), 50257, everies, reps, float32_too=both)
    ratios(res, model, "gpt2s_1x1024", (2, 1024, 1), 50257, everies, reps, float32_too=both)
    res["capture_tokens_per_s_gpt2s_1x1024"] = res.pop("_tokens_per_s")
    res.update(host_overhead_proxy(reps))
    from generator.models import ModelSpec, load

    note("loading SmolLM2")
    loaded = load(ModelSpec(name="smollm2-135m", embedded="smollm2-135m"))
    if not quick:
        for k, v in profile_capture(loaded.model, (4, 512, 4)).items():
            res[f"profile_smollm2_4x512_{k}"] = v
    ratios(res, loaded.model, "smollm2_4x512", (4, 512, 4), 49152, everies, reps, float32_too=both)
    res.pop("_tokens_per_s", None)
    if not quick:
        note("PCA from 1 in 8 tokens vs all, on SmolLM2's states")
        res.update(pca_sampled_vs_exact(loaded))
    note("PCA from the streaming covariance vs scikit-learn, 100k x 768")
    res.update(pca_vs_sklearn(30_000 if quick else 100_000))
    note("UMAP")
    res.update(umap_timing(2000 if quick else 8000))
    res.update(cuml_umap_timing())
    extrapolate(res, model)
    if not quick:
        res.update(peak_rss())
    res["bench_minutes"] = (time.perf_counter() - started) / 60
    return report(res, Path("build/bench.json"))


def peak_rss(pairs: int = 2) -> dict[str, Any]:
    """Peak RSS of capture and of the forward alone at 32 x 1024 tokens, and its growth to 128.

    One subprocess per measurement; a single one moved by about +-150 MB between identical
    runs when the covariances' 32 MB row pools fragmented the heap (+-50 MB with 4 MB pools),
    so the 32-sample ones are run in `pairs` interleaved pairs (capture, then forward) and
    their means are reported with every run.
    Growth is read inside the 128-sample run: its peak after the shard that completes 32
    samples against its peak at the end (same process, same heap). Shards of 16 samples: the
    float64 totals exist from the first merge on.
    """
    caps, fwds = [], []
    for i in range(pairs):
        note(f"peak RSS, 32 x 1024 tokens, capture and forward alone (subprocesses, pair {i + 1})")
        caps.append(rss(32)["rss_mb"])
        fwds.append(rss(32, forward_only=True)["rss_mb"])
    note("peak RSS, 128 x 1024 tokens, after every shard (subprocess, minutes)")
    long = rss(128)
    series = {int(k): v for k, v in long["by_shard"].items()}
    res: dict[str, Any] = {"rss_mb_32_runs": [round(c) for c in caps],
                           "rss_mb_forward_only_32_runs": [round(f) for f in fwds],
                           "rss_mb_32": float(np.mean(caps)),
                           "rss_mb_forward_only_32": float(np.mean(fwds)),
                           "rss_mb_128": long["rss_mb"],
                           "rss_mb_128_run_by_samples": {k: round(v) for k, v in series.items()},
                           "rss_mb_128_run_shard_peaks": [round(v) for v in long["shard_peaks"]]}
    res["rss_growth_32_to_128"] = long["rss_mb"] / series[min(k for k in series if k >= 32)] - 1
    res["capture_peak_vs_forward_peak"] = res["rss_mb_32"] / res["rss_mb_forward_only_32"]
    return res


def main_cuda(quick: bool) -> dict[str, Any]:
    """The issue's GPU targets on a CUDA device (reducers stay on the GPU), random weights.

    Per shape and dtype (float32, bfloat16): capture vs forward ratios, `cuda_split` (host and
    device time per batch, kernels launched), then `cuda_loop_checks` (the capture loop under
    `torch.cuda.set_sync_debug_mode("error")`, and the device memory peak against the
    forward's). The targets' shapes come first and the extra shapes last; results are written
    after every step, and a step that fails records its error and the bench goes on, so a run
    cut short or broken still leaves what it measured (device time is lent by the minute).
    """
    if not torch.cuda.is_available():
        from generator.errors import AtlasError

        raise AtlasError("bench --device cuda", "no CUDA device is available", "run it on a GPU machine")
    res: dict[str, Any] = {"machine": f"{torch.cuda.get_device_name()}, torch {torch.__version__}"}
    path = Path("build/bench-cuda.json")
    reps = 3
    both, bf16 = (torch.float32, torch.bfloat16), (torch.bfloat16,)
    targets = (("gpt2s_8x1024", gpt2_small, 50257, (32, 1024, 8), (8,), both),
               ("smollm2shape_4x512", smollm2_shaped, 49152, (16, 512, 4), (8,), both),
               ("llama7bshape_8x2048", llama7b_shaped, 32000, (16, 2048, 8), (8,), bf16))
    extras = (("gpt2s_8x128", gpt2_small, 50257, (32, 128, 8), (8,), both),
              ("smollm2shape_32x512", smollm2_shaped, 49152, (64, 512, 32), (8,), both),
              ("gpt2s_8x1024", gpt2_small, 50257, (32, 1024, 8), (1,), both))
    for label, make, vocab, shape, everies, dtypes in targets + (() if quick else extras):
        for dtype in dtypes:
            name = f"{label}_{str(dtype).removeprefix('torch.')}"
            try:
                model = make("cuda").to(dtype)
                # the paper-style copies of LLaMA-7B's outputs are 35 GB a batch: not timed
                ratios(res, model, name, shape, vocab, everies, reps, seed=label != "llama7bshape_8x2048")
                if label in ("gpt2s_8x1024", "llama7bshape_8x2048") and everies == (8,):
                    res[f"capture_tokens_per_s_{name}"] = res.pop("_tokens_per_s")
                report(res, path, quiet=True)
                if everies == (8,):
                    res.update(cuda_split(model, name, shape, vocab))
                    report(res, path, quiet=True)
                    res.update(cuda_loop_checks(model, name, shape, vocab))
            except Exception as e:  # noqa: BLE001 - record it, measure the rest
                res[f"error_{name}_every_{everies[0]}"] = f"{type(e).__name__}: {e}"[:500]
                note(f"{name}: {type(e).__name__}: {e}")
            report(res, path, quiet=True)
            model = None
            torch.cuda.empty_cache()
    res.pop("_tokens_per_s", None)
    measured = {size: res.get(f"capture_tokens_per_s_gpt2s_8x1024_{dt}")
                for size, dt in ((4, "float32"), (2, "bfloat16"))}
    with torch.device("meta"):  # its shape and parameter count; no weights
        extrapolate(res, gpt2_small("meta"), measured, "extrapolated_cuda")
    llama = res.get("capture_tokens_per_s_llama7bshape_8x2048_bfloat16")
    if llama:  # the paper's LLaMA-7B run at the throughput measured at its own shape
        n, t = PAPER_SIZES["llama7b_64x2048_bf16"][2:4]
        res["extrapolated_cuda_llama7b_64x2048_bf16_hours_at_measured_llama7b_rate"] = (
            n * t / llama / 3600)
    res.update(cuml_umap_timing())
    return report(res, path)


def _cuda_shard(model: Any, shape: tuple[int, int, int], vocab: int) -> tuple[list, Any, Any]:
    """One shard of random tokens of `shape` on the GPU, with its adapter and plain forward.

    The shared setup (and baseline) of `cuda_split` and `cuda_loop_checks`.
    """
    from generator.inputs import TokenInputs

    n, t, bs = shape
    ids = torch.randint(0, vocab, (n, t))
    inputs = TokenInputs("text", ids, torch.ones_like(ids, dtype=torch.bool), bs)
    batches = [b.on(torch.device("cuda")) for b in inputs.batches()]

    def forward() -> None:
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.mask.long(), use_cache=False)
    return batches, architectures.for_config(model.config), forward


def cuda_split(model: Any, label: str, shape: tuple[int, int, int], vocab: int,
               reps: int = 3) -> dict[str, Any]:
    """Where a GPU batch's time goes: host time to issue it, device time, kernels launched.

    For the forward alone and for the capture loop (default suite's reducers, one shard of
    `shape`, after a warm-up shard): host seconds until the loop returns without waiting for
    the device, wall seconds with the wait, and CUDA kernels per batch from the profiler. When
    the capture's host time exceeds the forward's wall time the GPU waits on Python and
    dispatch (host-bound); otherwise on its own kernels. Medians of `reps`.
    """
    from torch.profiler import ProfilerActivity, profile

    from generator.capture.hooks import Capture

    n, t, _ = shape
    batches, adapter, forward = _cuda_shard(model, shape, vocab)
    reducers = suite_reducers(model, max(n, PAPER_RUN_TOKENS // t), t)

    def capture() -> None:
        with Capture(model, adapter, reducers, deferred=True) as cap:
            for b in batches:
                cap.run(b)

    def times(f: Any) -> tuple[float, float]:
        host, wall = [], []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            host.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
            wall.append(time.perf_counter() - t0)
        return statistics.median(host), statistics.median(wall)

    def kernels(f: Any) -> tuple[int, list[tuple[str, int, float]]]:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            f()
            torch.cuda.synchronize()
        n_k = sum(1 for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        top = sorted(((e.key, e.count, e.self_cpu_time_total / 1000) for e in p.key_averages()),
                     key=lambda e: -e[2])[:15]
        return n_k, top

    forward()
    capture()
    for r in reducers:
        r.arrays()
        r.reset()
    nb = len(batches)
    out: dict[str, Any] = {}
    for key, f in (("forward", forward), ("capture", capture)):
        host, wall = times(f)
        n_k, top = kernels(f)
        out[f"cuda_split_{label}_{key}_host_ms_per_batch"] = host / nb * 1000
        out[f"cuda_split_{label}_{key}_wall_ms_per_batch"] = wall / nb * 1000
        out[f"cuda_split_{label}_{key}_kernels_per_batch"] = n_k / nb
        out[f"cuda_split_{label}_{key}_top_ops_calls_and_self_cpu_ms_per_batch"] = [
            (k, round(c / nb, 1), round(v / nb, 3)) for k, c, v in top]
    for r in reducers:
        r.reset()
    return out


def cuda_loop_checks(model: Any, label: str, shape: tuple[int, int, int],
                     vocab: int) -> dict[str, Any]:
    """The capture loop under sync-debug "error" mode, and its device memory peak.

    One shard of `shape` = (samples, tokens, batch size) with the default suite's reducers,
    after a warm-up shard (buffers allocated, as in a run). Any host synchronization inside the
    loop raises there; its first line is recorded. The peak is `torch.cuda.max_memory_allocated`
    over the loop against the same over the forward alone, on the same batches.
    """
    from generator.capture.hooks import Capture

    n, t, _ = shape
    batches, adapter, forward = _cuda_shard(model, shape, vocab)

    forward()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    forward()
    torch.cuda.synchronize()
    forward_peak = torch.cuda.max_memory_allocated()
    reducers = suite_reducers(model, n, t)
    with Capture(model, adapter, reducers, deferred=True) as cap:
        for b in batches:
            cap.run(b)
    for r in reducers:
        r.arrays()
        r.reset()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    error = ""
    torch.cuda.set_sync_debug_mode("error")
    try:
        with Capture(model, adapter, reducers, deferred=True) as cap:
            for b in batches:
                cap.run(b)
    except RuntimeError as e:
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return {f"cuda_loop_sync_free_{label}": not error, f"cuda_loop_sync_error_{label}": error,
            f"cuda_capture_peak_vs_forward_peak_{label}": torch.cuda.max_memory_allocated()
            / forward_peak}


def report(res: dict[str, Any], path: Path, quiet: bool = False) -> dict[str, Any]:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    if quiet:
        return res
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return res


if __name__ == "__main__":
    main("--quick" in sys.argv, "cuda" if "--cuda" in sys.argv else "cpu")
