"""Massive activations: the few positions or tokens whose norm dwarfs the rest.

Position 0 (and in some models a handful of other positions or tokens) carries a residual norm
tens to thousands of times the typical one. Left in, such a point alone decides a PCA's first
component, a depth curve's jump or a headline number. Experiments detect them here, report them
on their own, and keep them out of the geometry they would dominate, saying what was excluded.

The rule is robust and scale-free: a value is massive when it is more than `factor` times the
median of its group (default 4x), which the bulk of positions never reaches (their norms vary by
well under 2x) and massive activations exceed by an order of magnitude or more.
"""

from __future__ import annotations

import numpy as np

FACTOR = 4.0
"""How many times the median norm makes a value massive.

Checked on SmolLM2-135M (64 x 256 text tokens, residual after the MLP): positions 2 and later
stay within 0.98-1.04x the median pooled over blocks 6-23 (at most 1.3x in any one block);
position 0 is 98x pooled, 2.2x in block 0, 1.1-1.3x in blocks 9-10 and 5-186x in the other
blocks; position 1 is 1.9x pooled (up to 3x in single blocks): not a massive norm, but an
outlying mean state, which `outlying_rows` catches. No factor between 1.3x and 5x separates
anything more, so it stays at 4, the value the other pages use.
"""


def massive(norms: np.ndarray, factor: float = FACTOR) -> np.ndarray:
    """Boolean mask of the entries of `norms` above `factor` x their median (NaN: never massive)."""
    v = np.asarray(norms, np.float64)
    ok = np.isfinite(v) & (v > 0)
    if ok.sum() < 3:
        return np.zeros(v.shape, bool)
    return ok & (v > factor * np.median(v[ok]))


def massive_positions(norm_by_position: np.ndarray, factor: float = FACTOR) -> list[int]:
    """Positions (indices) whose mean norm is massive, in increasing order."""
    return [int(i) for i in np.flatnonzero(massive(norm_by_position, factor))]


def excluded_line(positions: list[int], what: str = "position",
                  where: str = "shown on the norms page") -> str:
    """Subtitle words naming what was left out, or '' when nothing was."""
    if not positions:
        return ""
    shown = ", ".join(str(p) for p in positions[:8]) + (" ..." if len(positions) > 8 else "")
    noun = what if len(positions) == 1 else f"{what}s"
    return f"massive-norm {noun} {shown} left out ({where})"


def pooled_norm_by_position(sum_pos: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Mean norm per position over several sites (`NormStats` rows), token-weighted.

    NaN where no token was seen. The profile both `norms` and `positions` detect massive
    positions on.
    """
    s, n = np.asarray(sum_pos, np.float64), np.asarray(n_pos, np.float64)
    if s.ndim == 2:
        s, n = s.sum(0), n.sum(0)
    return np.divide(s, n, out=np.full(s.shape, np.nan), where=n > 0)


def times_median(norms: np.ndarray) -> np.ndarray:
    """Each entry over the median of the finite positive entries (what `massive` compares)."""
    v = np.asarray(norms, np.float64)
    ok = np.isfinite(v) & (v > 0)
    return v / np.median(v[ok]) if ok.any() else np.full(v.shape, np.nan)


def massive_by_group(norms: np.ndarray, groups: np.ndarray, factor: float = FACTOR) -> np.ndarray:
    """`massive` within each group (a site; a block and component).

    Each value is compared with its own group's median, so a site whose norms are all large is
    not massive as a whole.
    """
    v = np.asarray(norms, np.float64)
    out = np.zeros(v.shape, bool)
    g = np.asarray(groups)
    for key in np.unique(g):
        sel = g == key
        out[sel] = massive(v[sel], factor)
    return out


def position_counts(positions: np.ndarray, top: int = 6) -> str:
    """Where left-out points sit, most frequent position first.

    'position 0 (18 points)', 'positions 1 (2 points), 134 (2 points), 5, 7, 9, 15 and 12 more
    positions': a count is given where a position holds more than one point.
    """
    pos, n = np.unique(np.asarray(positions, np.int64), return_counts=True)
    if not len(pos):
        return ""
    order = np.lexsort((pos, -n))
    shown = ", ".join(f"{int(pos[i])} ({int(n[i])} points)" if n[i] > 1 else str(int(pos[i]))
                      for i in order[:top])
    more = len(pos) - top
    noun = "position" if len(pos) == 1 else "positions"
    return f"{noun} {shown}" + (f" and {more} more position{'s' * (more > 1)}" if more > 0 else "")


DISTANCE_FACTOR = 8.0
"""How many times the median distance from the centre makes a mean state outlying.

Higher than `FACTOR` because distances between mean states carry real, smooth structure that
must stay in the fit. Measured on SmolLM2-135M (64 x 256 text tokens, residual after the MLP,
blocks 6-23, position 0 left out): the positions' distances run 0.8-1.5x the median (1st-90th
percentile); the early-position trend peaks at 3.9x at position 2 and decays smoothly through
positions 3-10 (3.1x down to 2.3x), a curve the page should show; position 1 alone sits at 16x
and carried 74% of PC1's variance. 8x is near the geometric middle of 3.9 and 16: the trend
stays, the lone point goes.
"""


def outlying_rows(vectors: np.ndarray,
                  factor: float = DISTANCE_FACTOR) -> tuple[list[int], np.ndarray]:
    """Rows far from the rest, and every row's distance over the median distance.

    The distance is to the coordinate-wise median row, a centre the outliers cannot move; a row
    is outlying when it is more than `factor` x the median distance away. This is what decides
    a PCA: a mean state can sit far from the others with an ordinary norm (SmolLM2's position
    1: norm about 2x the median position's, its mean state 16x the median distance out).
    """
    v = np.asarray(vectors, np.float64)
    if len(v) < 3:
        return [], np.ones(len(v))
    dist = np.linalg.norm(v - np.median(v, axis=0), axis=1)
    return massive_positions(dist, factor), times_median(dist)
