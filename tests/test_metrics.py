"""Metrics: hand-made cases, and agreement with pytrec_eval on the real SciFact BM25 run."""

from __future__ import annotations

import math

import pytest

from rankwise.eval.metrics import evaluate, parse_metric, per_query


def test_metrics_hand_computed_graded():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"x": 0.9, "b": 0.8, "a": 0.7, "c": 0.1}}
    got = evaluate(qrels, run, ["ndcg@3", "recall@2", "mrr@10", "map@10", "p@2"])
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@3"] == pytest.approx(dcg / idcg)
    assert got["recall@2"] == pytest.approx(0.5)
    assert got["mrr@10"] == pytest.approx(0.5)
    assert got["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["p@2"] == pytest.approx(0.5)


def test_metrics_ties_broken_by_descending_docid_like_trec_eval():
    qrels = {"q": {"a": 1}}
    assert evaluate(qrels, {"q": {"a": 1.0, "b": 1.0}}, ["mrr@10"])["mrr@10"] == pytest.approx(0.5)
    assert evaluate(qrels, {"q": {"a": 1.0, "0": 1.0}}, ["mrr@10"])["mrr@10"] == pytest.approx(1.0)


def test_metrics_query_missing_from_run_counts_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert evaluate(qrels, {"q1": {"a": 1.0}}, ["ndcg@10"])["ndcg@10"] == pytest.approx(0.5)


def test_parse_metric_rejects_unknown_names():
    assert parse_metric("NDCG@10") == ("ndcg", 10)
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("foo@10")
    with pytest.raises(ValueError, match="cut-off"):
        parse_metric("ndcg@x")


def test_metrics_agree_with_pytrec_eval_on_bm25_scifact_run(bm25_scifact):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from rankwise.eval.metrics import run_from_candidates

    ds, candidates = bm25_scifact
    run = run_from_candidates(candidates)
    ours = per_query(ds.qrels, run, ["ndcg@10", "recall@100", "map@100", "mrr@1000", "p@10"])
    ref = pytrec_eval.RelevanceEvaluator(ds.qrels, {"ndcg_cut.10", "recall.100", "map_cut.100", "recip_rank", "P.10"}).evaluate(run)
    assert set(ref) == set(ours["ndcg@10"])
    for qid, m in ref.items():
        assert ours["ndcg@10"][qid] == pytest.approx(m["ndcg_cut_10"], abs=1e-6)
        assert ours["recall@100"][qid] == pytest.approx(m["recall_100"], abs=1e-6)
        assert ours["map@100"][qid] == pytest.approx(m["map_cut_100"], abs=1e-6)
        assert ours["mrr@1000"][qid] == pytest.approx(m["recip_rank"], abs=1e-6)
        assert ours["p@10"][qid] == pytest.approx(m["P_10"], abs=1e-6)
