"""BM25 through pyserini reproduces the published SciFact regression; the index is cached."""

from __future__ import annotations

import pytest

from rankwise.eval.metrics import evaluate


def test_bm25_scifact_matches_pyserini_regression(bm25_scifact):
    ds, candidates = bm25_scifact
    got = evaluate(ds.qrels, candidates, ["ndcg@10", "recall@100"])
    assert got["ndcg@10"] == pytest.approx(0.6789, abs=5e-4)
    assert got["recall@100"] == pytest.approx(0.9253, abs=5e-4)
    assert candidates.group_by("qid").len()["len"].max() == 100


def test_bm25_index_is_reused_for_the_same_corpus(bm25_scifact):
    from rankwise.rankers.first_stage.bm25 import BM25Retriever

    ds, _ = bm25_scifact
    docs = {d: ds.doc_text(d) for d in list(ds.corpus)[:50]}
    first = BM25Retriever.from_corpus(docs)
    stamp = sorted(p.stat().st_mtime_ns for p in first.index_dir.iterdir())
    again = BM25Retriever.from_corpus(docs)
    assert again.index_dir == first.index_dir
    assert sorted(p.stat().st_mtime_ns for p in again.index_dir.iterdir()) == stamp
    assert again.num_docs == 50
    hits = again.search(ds.doc_text(list(docs)[0])[:200], k=3)
    assert hits[0].docid == list(docs)[0] and [h.rank for h in hits] == [1, 2, 3]
