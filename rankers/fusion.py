"""Score fusion of a first-stage run with a reranker's scores, per query.

Formula:
    z-score: ``s = w · z(first) + (1 − w) · z(rerank)`` with ``z(x) = (x − mean_q x) / std_q x``;
    RRF:     ``s = w / (k + rank_first) + (1 − w) / (k + rank_rerank)`` (k = 60; w = 0.5 is the usual RRF).

Fusion weights must be chosen on a training split, never on the split being reported.
"""

from __future__ import annotations

from enum import Enum

import polars as pl

from rankwise.rankers.base import rank_by_score

__all__ = ["FusionMethod", "fuse"]


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
    method = FusionMethod(method)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fuse: weight must be in [0, 1], got {weight}")
    if method is FusionMethod.none:
        return rank_by_score(reranked)

    def norm(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        if method is FusionMethod.rrf:
            value = 1.0 / (rrf_k + pl.col("rank"))
        else:
            std = pl.col("score").std(ddof=0).over("qid")
            value = pl.when(std > 0).then((pl.col("score") - pl.col("score").mean().over("qid")) / std).otherwise(0.0)
        return rank_by_score(frame).select("qid", "docid", value.cast(pl.Float64).alias(name))

    joined = norm(first_stage, "a").join(norm(reranked, "b"), on=["qid", "docid"], how="left")
    if method is FusionMethod.rrf:
        joined = joined.with_columns(pl.col("b").fill_null(0.0))
    else:
        joined = joined.with_columns(pl.col("b").fill_null(pl.col("b").min().over("qid")).fill_null(0.0))
    fused = joined.select("qid", "docid", (weight * pl.col("a") + (1 - weight) * pl.col("b")).alias("score"))
    return rank_by_score(fused.with_columns(pl.lit(0, pl.Int64).alias("rank")))
