"""Score fusion of a first-stage run with one or more rerankers' scores, per query.

Formula (``n`` runs over the first run's candidates, weights ``w_i >= 0`` summing to 1):
    z-score: ``s = sum_i w_i · z(s_i)`` with ``z(x) = (x − mean_q x) / std_q x``;
    RRF:     ``s = sum_i w_i / (k + rank_i)`` (k = 60; equal weights are the usual RRF).
Two runs with weights ``(w, 1 − w)`` are :func:`fuse`. Reciprocal rank fusion: Cormack et al.,
SIGIR 2009; z-score (CombSUM over standardised scores): Fox & Shaw, TREC-2, 1994.

Fusion weights must be chosen on a training split, never on the split being reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import polars as pl

from rankwise.rankers.base import rank_by_score

__all__ = ["FusionMethod", "fuse", "fuse_many", "normalised_scores"]


class FusionMethod(str, Enum):
    none = "none"
    zscore = "zscore"
    rrf = "rrf"


def fuse(
    first_stage: pl.DataFrame,
    reranked: pl.DataFrame,
    weight: float,
    method: FusionMethod | str = FusionMethod.zscore,
    rrf_k: int = 60,
) -> pl.DataFrame:
    """Fuse two candidate sets over the same ``(qid, docid)`` pairs; returns a re-ranked candidate set.

    Args:
        first_stage: candidate set with the first-stage scores.
        reranked: candidate set with the reranker's scores (a subset of ``first_stage`` is fine:
            pairs the reranker did not score keep only the first-stage part).
        weight: weight ``w`` of the first stage in [0, 1].
        method: ``zscore`` or ``rrf`` (``none`` returns ``reranked``).

    Example:
        >>> a = pl.DataFrame({"qid": ["q", "q"], "docid": ["x", "y"], "score": [2.0, 1.0], "rank": [1, 2]})
        >>> b = pl.DataFrame({"qid": ["q", "q"], "docid": ["x", "y"], "score": [0.1, 0.9], "rank": [2, 1]})
        >>> fuse(a, b, 0.7)["docid"].to_list()
        ['x', 'y']
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fuse: weight must be in [0, 1], got {weight}")
    if FusionMethod(method) is FusionMethod.none:
        return rank_by_score(reranked)
    return fuse_many([first_stage, reranked], [weight, 1.0 - weight], method, rrf_k)


def fuse_many(
    runs: Sequence[pl.DataFrame],
    weights: Sequence[float],
    method: FusionMethod | str = FusionMethod.zscore,
    rrf_k: int = 60,
) -> pl.DataFrame:
    """Fuse ``n`` candidate sets over the first run's ``(qid, docid)`` pairs; returns a ranked set.

    Args:
        runs: the first-stage run first, then each reranker's run (subsets are fine: a pair a run
            did not score gets that query's lowest normalised value in z-score fusion, 0 in RRF).
        weights: one non-negative weight per run (normalised to sum to 1).
        method: ``zscore`` or ``rrf``.

    Example:
        >>> a = pl.DataFrame({"qid": ["q", "q"], "docid": ["x", "y"], "score": [2.0, 1.0], "rank": [1, 2]})
        >>> b = pl.DataFrame({"qid": ["q", "q"], "docid": ["x", "y"], "score": [0.1, 0.9], "rank": [2, 1]})
        >>> fuse_many([a, b, b], [0.5, 0.25, 0.25])["docid"].to_list()
        ['x', 'y']
    """
    if len(runs) != len(weights) or len(runs) < 2:
        raise ValueError(f"fuse_many: need >= 2 runs and one weight per run, got {len(runs)} runs and {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"fuse_many: weights must be >= 0 with a positive sum, got {list(weights)}")
    joined = normalised_scores(runs, method, rrf_k)
    total = float(sum(weights))
    score = sum((w / total * pl.col(f"r{i}") for i, w in enumerate(weights)), pl.lit(0.0))
    fused = joined.select("qid", "docid", score.alias("score"))
    return rank_by_score(fused.with_columns(pl.lit(0, pl.Int64).alias("rank")))


def normalised_scores(
    runs: Sequence[pl.DataFrame],
    method: FusionMethod | str = FusionMethod.zscore,
    rrf_k: int = 60,
) -> pl.DataFrame:
    """The per-run terms that :func:`fuse_many` weighs: one row per ``(qid, docid)`` of the first run,
    columns ``qid, docid, r0 .. r{n-1}`` holding ``z(s_i)`` (or ``1 / (k + rank_i)`` for RRF), a pair a
    run did not score filled as :func:`fuse_many` says. A weight sweep computes this once."""
    method = FusionMethod(method)
    if method is FusionMethod.none:
        raise ValueError("fusion: method 'none' fuses nothing; use zscore or rrf")

    def norm(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        if method is FusionMethod.rrf:
            value = 1.0 / (rrf_k + pl.col("rank"))
        else:
            std = pl.col("score").std(ddof=0).over("qid")
            value = pl.when(std > 0).then((pl.col("score") - pl.col("score").mean().over("qid")) / std).otherwise(0.0)
        return rank_by_score(frame).select("qid", "docid", value.cast(pl.Float64).alias(name))

    joined = norm(runs[0], "r0")
    for i, run in enumerate(runs[1:], start=1):
        name = f"r{i}"
        joined = joined.join(norm(run, name), on=["qid", "docid"], how="left")
        fill = pl.lit(0.0) if method is FusionMethod.rrf else pl.col(name).min().over("qid")
        joined = joined.with_columns(pl.col(name).fill_null(fill).fill_null(0.0))
    return joined
