"""Exact head: a quantised graph scores every candidate, the fp32 graph rescores the top ``k`` (ours).

int8 scoring moves a few pairs' scores by much more than its average error, and on a cross-encoder
the pairs that matter most are the ones near the top: a query whose relevant document fp32 ranks
first with a small margin can lose it to int8 (``benchmarks/serving_latency.py`` docstring). A
cascade spends the fp32 work only there:

    s_i = int8 score of candidate i, for all n candidates (one pass of the quantised graph);
    H   = the k candidates with the largest s_i;
    t_i = fp32 score of candidate i ∈ H (one pass of the fp32 graph over k pairs);
    final order: H sorted by t, then the rest sorted by s.

The order inside H is exactly fp32's, and whenever fp32's top ``m`` lies inside H so are the first
``m`` places of the final ranking. The cost per query is ``n`` int8 pairs plus ``k`` fp32 pairs
(``k = 3`` of 100 on the SciFact MiniLM cross-encoder: 2237 against int8-smooth's 2095 ms per query, +7 %).

Returned scores are on one scale (both graphs output the same logit): H keeps its fp32 scores and the
rest keep their int8 scores shifted down by one constant where needed, so that a sort by score gives
the order above and the tail's own order and gaps are unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["head_indices", "merge_head"]


def head_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (``(n,)``), best first; ties keep input order."""
    return np.argsort(-np.asarray(scores), kind="stable")[: max(0, k)]


def merge_head(fast: np.ndarray, head: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Scores whose descending sort is "head by ``exact``, then the rest by ``fast``".

    Args:
        fast: ``(n,)`` scores of every candidate from the fast (quantised) graph.
        head: ``(k,)`` indices of the rescored candidates.
        exact: ``(k,)`` their fp32 scores.

    Returns:
        ``(n,)`` float64: ``exact`` at ``head``; elsewhere ``fast − δ`` with
        ``δ = max(0, max_tail(fast) − min(exact) + ε)``, ε a relative 1e-6, so every tail score is
        below every head score.
    """
    out = np.asarray(fast, dtype=np.float64).copy()
    if len(head) == 0:
        return out
    exact = np.asarray(exact, dtype=np.float64)
    tail = np.ones(len(out), dtype=bool)
    tail[head] = False
    out[head] = exact
    if tail.any():
        floor = float(exact.min())
        gap = float(out[tail].max()) - floor
        if gap >= 0:
            out[tail] -= gap + 1e-6 * max(1.0, abs(floor))
    return out
