"""The one vocabulary of capture points, used in code, file names, table columns and page text.

A *site* is a (point, block) pair. `embed` sits at block -1 (before block 0) and `norm_final`
at block `n_blocks` (after the last), so sorting sites by `depth` follows the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_POINTS = ("norm_attn", "attn", "resid_attn", "norm_mlp", "mlp", "resid_mlp")
ALL_POINTS = ("embed", *BLOCK_POINTS, "norm_final")
RESIDUAL_POINTS = ("embed", "resid_attn", "resid_mlp", "norm_final")
COMPONENT_POINTS = ("attn", "mlp")

POINT_MEANING = {
    "embed": "initial embedding: the input to block 0 (token embedding plus, where the family has "
             "one, the learned position table, after any scale or embedding norm)",
    "norm_attn": "output of the norm before attention (absent where a family has none: OLMo 2)",
    "attn": "what the attention branch adds to the residual: the attention output, after the "
            "post-norm in sandwich blocks (Gemma 2/3, OLMo 2), times the residual multiplier "
            "where a family has one (Granite)",
    "resid_attn": "residual stream after the attention add; sequential blocks only: a parallel "
                  "block (GPT-J, Pythia, Phi, Cohere, Falcon-7B/40B) has no mid-block residual, "
                  "so this point is not captured there",
    "norm_mlp": "output of the norm before the MLP (in blocks with one shared norm, the same "
                "tensor as norm_attn)",
    "mlp": "what the MLP (or whole mixture-of-experts block) adds to the residual, after the "
           "post-norm and multiplier where the family has them",
    "resid_mlp": "residual stream after the MLP add (the block's output)",
    "norm_final": "output of the final norm",
}


@dataclass(frozen=True, order=True)
class Site:
    """One capture point in one block."""

    depth: int
    point: str
    block: int

    @property
    def label(self) -> str:
        return self.point if self.point in ("embed", "norm_final") else f"{self.point}@{self.block}"


def all_sites(n_blocks: int) -> list[Site]:
    """Every site of a model in forward order."""
    sites = [Site(0, "embed", -1)]
    for b in range(n_blocks):
        sites += [Site(1 + b * 6 + k, p, b) for k, p in enumerate(BLOCK_POINTS)]
    sites.append(Site(1 + n_blocks * 6, "norm_final", n_blocks))
    return sites


def middle_blocks(n_blocks: int, fraction: float = 0.6) -> list[int]:
    """The middle `fraction` of depth, as the paper uses for its attention/MLP and position figures."""
    keep = max(1, round(n_blocks * fraction))
    start = (n_blocks - keep) // 2
    return list(range(start, start + keep))


def middle_sites(n_blocks: int, point: str, fraction: float = 0.6) -> list[Site]:
    """The sites of `point` in the middle blocks: what several experiments average over."""
    mids = set(middle_blocks(n_blocks, fraction))
    return [s for s in all_sites(n_blocks) if s.point == point and s.block in mids]
