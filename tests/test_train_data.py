"""Training lists: BM25 hard negatives, labels, determinism by seed, lazy streaming, collation."""

import itertools

import pytest
import torch

from rankwise.eval.datasets.beir import load_beir
from rankwise.rankers.base import Hit
from rankwise.train.data import HardNegativeLists, collate_lists


def _toy(calls=None):
    hits = [Hit(f"d{i}", 10.0 - i, i + 1) for i in range(10)]

    def search(query, k):
        if calls is not None:
            calls.append(query)
        return hits[:k]

    queries = {"q1": "one", "q2": "two", "q3": "three"}
    qrels = {"q1": {"d3": 2, "d42": 1}, "q2": {"d0": 1}, "q3": {"d5": 0}}
    return queries, qrels, {f"d{i}": f"text {i}" for i in range(50)}, search


def test_lists_hold_positives_and_non_relevant_bm25_negatives():
    queries, qrels, docs, search = _toy()
    lists = list(HardNegativeLists(queries, qrels, docs, search, list_size=5, negatives_from=10, epochs=1))
    assert sorted(t.qid for t in lists) == ["q1", "q2"]  # q3 has no relevant document
    q1 = next(t for t in lists if t.qid == "q1")
    labels = dict(zip(q1.docids, q1.labels))
    assert labels["d3"] == 2.0 and labels["d42"] == 1.0 and len(q1.docids) == 5
    assert all(labels[d] == 0.0 for d in q1.docids if d not in ("d3", "d42"))
    info = dict(zip(q1.docids, zip(q1.first_stage_ranks, q1.first_stage_scores)))
    assert info["d3"] == (4, 7.0)
    assert info["d42"] == (11, 1.0)  # absent from BM25: rank k + 1, the list's lowest score
    assert q1.docs[q1.docids.index("d3")] == "text 3"


def test_same_seed_same_stream_other_seed_differs():
    queries, qrels, docs, search = _toy()

    def take(seed):
        it = HardNegativeLists(queries, qrels, docs, search, list_size=4, epochs=None, seed=seed)
        return [(t.qid, t.docids) for t in itertools.islice(it, 6)]

    assert take(0) == take(0)
    assert take(0) != take(1)


def test_lists_are_streamed_lazily():
    calls = []
    queries, qrels, docs, search = _toy(calls)
    it = iter(HardNegativeLists(queries, qrels, docs, search, list_size=4, epochs=None))
    next(it)
    assert len(calls) == 1
    list(itertools.islice(it, 5))  # later epochs reuse the first-stage results
    assert len(calls) == 2


def test_hardest_takes_top_ranked_negatives():
    queries, qrels, docs, search = _toy()
    it = HardNegativeLists({"q2": "two"}, qrels, docs, search, list_size=3, hardest=True, epochs=1)
    assert sorted(next(iter(it)).docids) == ["d0", "d1", "d2"]


def test_collate_pads_with_mask():
    queries, qrels, docs, search = _toy()
    lists = list(HardNegativeLists(queries, qrels, docs, search, list_size=5, negatives_from=3, epochs=1))
    batch = collate_lists(lists)
    assert batch.labels.shape == batch.mask.shape == (2, 5)
    assert [int(m.sum()) for m in batch.mask] == [len(t.docids) for t in lists]
    assert (batch.labels[~batch.mask] == 0).all()
    assert batch.first_stage_ranks.dtype == torch.long


def test_bad_arguments():
    queries, qrels, docs, search = _toy()
    with pytest.raises(ValueError, match="list_size"):
        HardNegativeLists(queries, qrels, docs, search, list_size=1)
    with pytest.raises(ValueError, match="no query"):
        HardNegativeLists({"q3": "x"}, qrels, docs, search)


def test_real_scifact_lists_with_bm25(data_dir):
    from rankwise.rankers.first_stage.bm25 import BM25Retriever

    ds = load_beir(data_dir / "beir" / "scifact", "train", download=False)
    bm25 = BM25Retriever.from_corpus({d: ds.doc_text(d) for d in ds.corpus})
    queries = {q: ds.queries[q] for q in sorted(ds.qrels)[:5]}
    lists = list(HardNegativeLists(queries, ds.qrels, ds.doc_text, bm25.search, list_size=8, epochs=1, seed=3))
    assert len(lists) == 5
    for t in lists:
        rel = {d for d, g in ds.qrels[t.qid].items() if g > 0}
        assert len(t.docids) == 8 and len(set(t.docids)) == 8
        assert rel & set(t.docids)
        assert all(r <= 100 for d, r in zip(t.docids, t.first_stage_ranks) if d not in rel)
