"""PCA from a covariance matrix (what the streaming reducer gives) or from a few points.

Signs are fixed (largest-magnitude loading positive) so figures are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PCAFit:
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T


def from_covariance(mean: np.ndarray, cov: np.ndarray, k: int) -> PCAFit:
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals = np.clip(vals[order], 0.0, None)
    vecs = vecs[:, order].T[:k]
    flip = np.sign(vecs[np.arange(len(vecs)), np.abs(vecs).argmax(1)])
    vecs = vecs * flip[:, None]
    total = vals.sum()
    evr = vals / total if total > 0 else np.zeros_like(vals)
    return PCAFit(np.asarray(mean, np.float64), vecs, vals[:k], evr[:k])


def fit(x: np.ndarray, k: int) -> PCAFit:
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    c = x - mean
    return from_covariance(mean, c.T @ c / max(len(x) - 1, 1), k)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fitted_on(facts: dict, what: str = "tokens", kept: bool = False) -> str:
    """Subtitle words on the tokens behind a PCA's covariance and how it was summed.

    `facts`: `total_tokens`, `cov_every`, `cov_matmul` as an experiment stored them (facts
    written before 2026-11-28 lack the last two: nothing is said of them). A sampled
    covariance's count is the sample's weighted count, an estimate of the tokens it stands for.
    """
    n, every = facts["total_tokens"], facts.get("cov_every")
    prod = ["products in bfloat16"] if facts.get("cov_matmul") == "bfloat16" else []
    if every is None or every == 1:
        how = (["exact covariance"] if every == 1 else []) + prod
        return f"PCA fitted on all {n:,} {what}" + (f" ({', '.join(how)})" if how else "")
    how = [f"estimated from 1 in {every} of them"] + (["high-norm tokens kept"] if kept else [])
    return f"PCA fitted on a covariance of about {n:,} {what}, " + ", ".join(how + prod)
