"""Paired comparison of two runs on the same queries: the mean per-query difference, its bootstrap
confidence interval and a randomization-test p-value.

Formula:
    ``d_q = m_b(q) - m_a(q)`` for every judged query ``q`` (``m``: a metric of :mod:`eval.metrics`;
    when ``b`` is several runs, e.g. one per training seed, ``m_b(q)`` is their mean on ``q``);
    ``delta = mean_q d_q``; the interval is the percentile bootstrap of ``mean d`` over queries
    resampled with replacement; the p-value is the two-sided paired randomization (sign-flip) test:
    the share of random sign assignments of the ``d_q`` whose mean is at least ``|delta|`` away from 0.

Paper:
    Smucker, Allan and Carterette, "A Comparison of Statistical Significance Tests for Information
    Retrieval Evaluation", CIKM 2007, https://doi.org/10.1145/1321440.1321528 (the randomization test
    as the IR default; the bootstrap agrees with it). Both resamplings are scipy's
    (``scipy.stats.permutation_test`` with ``permutation_type="samples"``, ``scipy.stats.bootstrap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from rankwise.eval.metrics import per_query, run_from_candidates

__all__ = ["PairedComparison", "paired_comparison"]

Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class PairedComparison:
    """Run ``b`` against run ``a`` on ``queries`` judged queries (``delta`` = b - a)."""

    metric: str
    queries: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float

    def as_fields(self, prefix: str) -> dict[str, float]:
        """Flat result-row fields, e.g. ``{prefix}_delta``, ``{prefix}_ci95_low``, ``{prefix}_p_value``."""
        return {f"{prefix}_delta": self.delta, f"{prefix}_ci95_low": self.ci_low, f"{prefix}_ci95_high": self.ci_high,
                f"{prefix}_p_value": self.p_value}


def _as_run(run: Run | pl.DataFrame) -> Run:
    return run_from_candidates(run) if isinstance(run, pl.DataFrame) else run


def paired_comparison(
    qrels: dict[str, dict[str, int]],
    run_a: Run | pl.DataFrame,
    run_b: Run | pl.DataFrame | Sequence[Run | pl.DataFrame],
    metric: str = "ndcg@10",
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare ``run_b`` with ``run_a`` on every judged query of ``qrels`` (a query a run misses scores 0).

    Args:
        qrels: ``qid -> {docid: grade}``; only queries with a relevant document count.
        run_a, run_b: ``qid -> {docid: score}`` or candidate frames (``qid, docid, score``); ``run_b``
            may be a list of runs (seeds of one recipe): their per-query mean is compared, so the
            interval covers query sampling around the seed mean, not the spread between seeds.
        metric: a metric name of :mod:`eval.metrics`, e.g. ``ndcg@10``.
        resamples: bootstrap resamples and random sign assignments.
        confidence: the interval's coverage.
        seed: seeds both resamplings.

    Example:
        >>> qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
        >>> bm25 = {"q1": {"a": 1.0, "x": 0.5}, "q2": {"x": 1.0, "b": 0.5}}
        >>> better = {"q1": {"a": 1.0, "x": 0.5}, "q2": {"b": 1.0, "x": 0.5}}
        >>> c = paired_comparison(qrels, bm25, better)
        >>> round(c.delta, 4), c.queries, c.p_value
        (0.1845, 2, 1.0)
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_comparison: confidence must be in (0, 1), got {confidence}")
    a = per_query(qrels, _as_run(run_a), [metric])[metric]
    runs_b = list(run_b) if isinstance(run_b, Sequence) else [run_b]
    if not runs_b:
        raise ValueError("paired_comparison: run_b is an empty list of runs")
    per_b = [per_query(qrels, _as_run(r), [metric])[metric] for r in runs_b]
    b = {q: float(np.mean([m[q] for m in per_b])) for q in per_b[0]}
    qids = sorted(a)
    if not qids:
        raise ValueError("paired_comparison: qrels has no query with a relevant document")
    va, vb = np.array([a[q] for q in qids]), np.array([b[q] for q in qids])
    diff = vb - va
    if np.all(diff == diff[0]):  # no spread: the interval is the point and signs can only tie or not
        low = high = float(diff[0])
        p = 1.0 if diff[0] == 0 else float(2.0 ** (1 - len(diff)))
    else:
        rng = np.random.default_rng(seed)
        low, high = stats.bootstrap((diff,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                    method="percentile", rng=rng).confidence_interval
        p = stats.permutation_test((va, vb), lambda x, y, axis: np.mean(y - x, axis=axis), permutation_type="samples",
                                   n_resamples=resamples, alternative="two-sided", rng=rng).pvalue
    return PairedComparison(metric, len(qids), float(va.mean()), float(vb.mean()), float(diff.mean()), float(low), float(high),
                            float(min(1.0, p)))
