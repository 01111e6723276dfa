"""Paired comparison of two runs: exact sign-flip p-value, interval, degenerate cases, frames."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from rankwise.eval.metrics import per_query
from rankwise.eval.significance import paired_comparison


def _runs(n: int, seed: int):
    """``n`` queries, one relevant document each, placed at random ranks 1-5 by runs a and b."""
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {"rel": 1} for i in range(n)}
    runs = []
    for _ in range(2):
        run = {}
        for q in qrels:
            rank = int(rng.integers(0, 5))
            docs = [f"x{j}" for j in range(4)]
            docs.insert(rank, "rel")
            run[q] = {d: float(10 - j) for j, d in enumerate(docs)}
        runs.append(run)
    return qrels, *runs


def test_p_value_is_the_exact_sign_flip_test_on_few_queries():
    qrels, a, b = _runs(8, seed=3)
    got = paired_comparison(qrels, a, b, resamples=10_000)
    va, vb = per_query(qrels, a, ["ndcg@10"])["ndcg@10"], per_query(qrels, b, ["ndcg@10"])["ndcg@10"]
    diff = np.array([vb[q] - va[q] for q in sorted(qrels)])
    means = [abs(np.mean(diff * np.array(signs))) for signs in itertools.product((1, -1), repeat=len(diff))]
    expected = np.mean([m >= abs(diff.mean()) - 1e-12 for m in means])  # 2^8 assignments: scipy enumerates them all
    assert got.queries == 8 and got.delta == pytest.approx(diff.mean())
    assert got.p_value == pytest.approx(expected)
    assert got.ci_low <= got.delta <= got.ci_high


def test_a_run_better_on_every_query_is_significant_and_identical_runs_are_not():
    qrels = {f"q{i}": {"rel": 1} for i in range(40)}
    worse = {q: {"x": 2.0, "rel": 1.0} for q in qrels}
    better = {q: {"rel": 2.0, "x": 1.0} for q in qrels}
    up = paired_comparison(qrels, worse, better)
    assert up.delta > 0.3 and up.ci_low == up.ci_high == up.delta and up.p_value < 1e-6
    same = paired_comparison(qrels, worse, worse)
    assert same.delta == 0.0 and same.p_value == 1.0


def test_noisy_gain_interval_excludes_zero_and_frames_equal_dicts():
    qrels, a, _ = _runs(200, seed=0)
    b = {q: dict(docs, rel=docs["rel"] + (3.0 if i % 2 else 0.0)) for i, (q, docs) in enumerate(a.items())}
    got = paired_comparison(qrels, a, b)
    assert got.ci_low > 0 and got.p_value < 0.01 and got.mean_b > got.mean_a
    frame = lambda run: pl.DataFrame([{"qid": q, "docid": d, "score": s} for q, docs in run.items() for d, s in docs.items()])
    assert paired_comparison(qrels, frame(a), frame(b)) == got


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no query with a relevant document"):
        paired_comparison({"q": {"d": 0}}, {"q": {"d": 1.0}}, {"q": {"d": 1.0}})


def test_several_runs_for_b_compare_their_per_query_mean():
    qrels, a, b1 = _runs(30, seed=3)
    _, b2, _ = _runs(30, seed=4)
    two = paired_comparison(qrels, a, [b1, b2], resamples=500)
    m1, m2 = per_query(qrels, b1, ["ndcg@10"])["ndcg@10"], per_query(qrels, b2, ["ndcg@10"])["ndcg@10"]
    assert two.mean_b == pytest.approx(np.mean([(m1[q] + m2[q]) / 2 for q in qrels]))
    assert two.delta == pytest.approx(two.mean_b - two.mean_a)
    one = paired_comparison(qrels, a, [b1], resamples=500)
    assert one == paired_comparison(qrels, a, b1, resamples=500)
    with pytest.raises(ValueError, match="empty"):
        paired_comparison(qrels, a, [])
