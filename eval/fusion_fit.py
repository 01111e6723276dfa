"""Choosing fusion weights on held-out queries (never on the split that is reported).

:func:`fit_fusion_weights` searches the simplex of run weights on a grid (step ``step``) for the
best mean metric over the given qrels, with :func:`rankwise.rankers.fusion.fuse_many`. Ties go to the
weights closest to equal (the least committed choice). Two runs give the familiar one-parameter
search over the first stage's weight ``w``. The sweep normalises the runs once
(:func:`~rankwise.rankers.fusion.normalised_scores`) and weighs them per grid point in the same order
as :func:`~rankwise.rankers.fusion.fuse_many`, so each point scores what ``fuse_many`` would rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from rankwise.eval.metrics import evaluate
from rankwise.rankers.fusion import FusionMethod, normalised_scores

__all__ = ["fit_fusion_weights", "fusion_sweep", "simplex_grid"]


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every ``n``-tuple of multiples of ``step`` in [0, 1] that sums to 1."""
    if n < 2 or not 0.0 < step <= 0.5:
        raise ValueError(f"simplex_grid: need n >= 2 and step in (0, 0.5], got n={n}, step={step}")
    units = round(1.0 / step)
    return [tuple(c * step for c in (*head, units - sum(head)))
            for head in itertools.product(range(units + 1), repeat=n - 1) if sum(head) <= units]


def fit_fusion_weights(
    runs: Sequence[pl.DataFrame],
    qrels: Mapping[str, Mapping[str, int]],
    step: float = 0.05,
    metric: str = "ndcg@10",
    method: FusionMethod | str = FusionMethod.zscore,
) -> tuple[tuple[float, ...], float]:
    """The weights of ``runs`` (first stage first) that maximise ``metric`` on ``qrels``, and that value.

    Only the queries of ``qrels`` are scored, so pass the held-out (dev) queries' judgements.
    """
    sweep = fusion_sweep(runs, qrels, step, metric, method)
    n = len(runs)
    weights, value = max(sweep, key=lambda wv: (wv[1], -sum(abs(w - 1.0 / n) for w in wv[0])))
    return weights, value


def fusion_sweep(
    runs: Sequence[pl.DataFrame],
    qrels: Mapping[str, Mapping[str, int]],
    step: float = 0.05,
    metric: str = "ndcg@10",
    method: FusionMethod | str = FusionMethod.zscore,
) -> list[tuple[tuple[float, ...], float]]:
    """``metric`` on ``qrels`` for every weight vector of :func:`simplex_grid` (the whole curve)."""
    keep = [pl.DataFrame(run).filter(pl.col("qid").is_in(list(qrels))) for run in runs]
    joined = normalised_scores(keep, method)
    columns = joined.select(f"r{i}" for i in range(len(keep))).to_numpy().T
    pairs = list(zip(joined["qid"].to_list(), joined["docid"].to_list()))
    sweep = []
    for weights in simplex_grid(len(keep), step):
        total, score = sum(weights), np.zeros(len(pairs))
        for w, column in zip(weights, columns):  # fuse_many's order of operations, so equal floats
            score = score + w / total * column
        run: dict[str, dict[str, float]] = {}
        for (qid, docid), value in zip(pairs, score.tolist()):
            run.setdefault(qid, {})[docid] = value
        sweep.append((tuple(round(w, 6) for w in weights), evaluate(qrels, run, [metric])[metric]))
    return sweep
