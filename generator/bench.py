"""`make bench`: performance measured side by side in one run, printed as ratios.

Ratios are medians of paired, interleaved repetitions (forward, then capture, then forward...),
so machine noise hits both sides alike. Memory is peak RSS of separate subprocesses.
"""

from __future__ import annotations

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

from generator import adapters, experiments
from generator.capture import Batch, Capture
from generator.experiments import Context
from generator.suite import CaptureOptions


def gpt2_small() -> Any:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    return GPT2Model(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024)).eval()


def suite_reducers(model: Any, n_samples: int, seq_len: int, cov_every: int = 1) -> list:
    """The text-mode reducers every default-suite experiment asks for."""
    adapter = adapters.for_config(model.config)
    ctx = Context("bench", adapter.n_blocks(model), int(model.config.hidden_size), 42,
                  {"text": seq_len, "repeat": 8, "singular": 1},
                  {"text": n_samples, "repeat": 1, "singular": 1}, None, model, adapter,
                  CaptureOptions(cov_every=cov_every))
    out = []
    for mod in experiments.registry().values():
        p = mod.Params()
        if mod.skip_reason(ctx, p) is None:
            out += list(mod.needs(ctx, p).get("text", {}).values())
    return out


class SeedStyle:
    """The paper's approach: every hooked output copied to the CPU, stacked after the forward."""

    def __init__(self, model: Any) -> None:
        a = adapters.for_config(model.config)
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


def paired_ratio(model: Any, ids: torch.Tensor, reducers_fn: Any, reps: int = 5) -> dict[str, float]:
    mask = torch.ones_like(ids, dtype=torch.bool)
    batch = Batch(ids, mask, torch.arange(ids.shape[0]))
    adapter = adapters.for_config(model.config)

    def plain() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)

    def ours() -> None:
        cap = Capture(model, adapter, reducers_fn())
        with cap:
            cap.run(batch)

    def seed() -> None:
        with SeedStyle(model), torch.inference_mode():
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)

    for f in (plain, ours, seed):
        f()  # warm-up
    ratios: dict[str, list[float]] = {"capture": [], "seed": []}
    for _ in range(reps):
        t = {}
        for name, f in (("plain", plain), ("capture", ours), ("plain2", plain), ("seed", seed)):
            t0 = time.perf_counter()
            f()
            t[name] = time.perf_counter() - t0
        ratios["capture"].append(t["plain"] / t["capture"])
        ratios["seed"].append(t["plain2"] / t["seed"])
    return {k: statistics.median(v) for k, v in ratios.items()}


def pca_vs_sklearn(n: int = 100_000, d: int = 768) -> dict[str, float]:
    from sklearn.decomposition import PCA

    from generator import pca
    from generator.capture import State
    from generator.points import Site
    from generator.reducers import Covariance

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


def umap_timing(n: int = 2000, d: int = 576) -> dict[str, float]:
    import umap

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    t0 = time.perf_counter()
    umap.UMAP(metric="cosine", random_state=42, n_jobs=1).fit_transform(x[:200])
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    umap.UMAP(metric="cosine", random_state=42, n_jobs=1).fit_transform(x)
    return {"umap_warmup_seconds": warm, "umap_seconds": time.perf_counter() - t0}


def rss_child(n_samples: int, seq_len: int = 1024, batch: int = 4) -> None:
    """Run in a subprocess: capture n_samples x seq_len into the suite reducers, print peak RSS."""
    torch.manual_seed(0)
    model = gpt2_small()
    reducers = suite_reducers(model, n_samples, seq_len)
    cap = Capture(model, adapters.for_config(model.config), reducers)
    with cap:
        for i in range(0, n_samples, batch):
            ids = torch.randint(0, 50257, (batch, seq_len))
            cap.run(Batch(ids, torch.ones_like(ids, dtype=torch.bool), torch.arange(i, i + batch)))
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def rss(n: int) -> float:
    out = subprocess.run([sys.executable, "-c", f"from generator.bench import rss_child; rss_child({n})"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rss_mb"]


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


def main(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(torch.get_num_threads())
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                           f"torch {torch.__version__}"}
    model = gpt2_small()
    for label, shape in (("gpt2s_8x128", (8, 128)), ("gpt2s_1x1024", (1, 1024))):
        ids = torch.randint(0, 50257, shape)
        for every in (1, 8):
            r = paired_ratio(model, ids, lambda s=shape, e=every: suite_reducers(model, s[0], s[1], e),
                             reps=3 if quick else 5)
            res[f"capture_vs_forward_{label}_cov_every_{every}"] = r["capture"]
        res[f"seed_style_vs_forward_{label}"] = r["seed"]
    from generator.models import ModelSpec, load

    smol = load(ModelSpec(name="smollm2-135m", embedded="smollm2-135m")).model
    ids = torch.randint(0, 49152, (4, 512))
    for every in (1, 8):
        r = paired_ratio(smol, ids, lambda e=every: suite_reducers(smol, 4, 512, e), reps=3)
        res[f"capture_vs_forward_smollm2_4x512_cov_every_{every}"] = r["capture"]
    res["seed_style_vs_forward_smollm2_4x512"] = r["seed"]
    res.update(pca_vs_sklearn())
    res.update(umap_timing())
    if not quick:
        res["rss_mb_16"], res["rss_mb_128"] = rss(16), rss(128)
        res["rss_growth"] = res["rss_mb_128"] / res["rss_mb_16"] - 1
        res.update(suite_timing())
    Path("build").mkdir(exist_ok=True)
    Path("build/bench.json").write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return res


if __name__ == "__main__":
    main("--quick" in sys.argv)
