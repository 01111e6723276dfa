"""Calibration pairs for post-training quantisation: traffic like the served queries, none of them.

:func:`bm25_calibration_pairs` takes the first ``n_queries`` judged queries of a BEIR split (use a
split that is not evaluated, e.g. ``train``) with their BM25 top-``top_k`` documents, as the
``(query, document)`` pairs that ``export_model(..., calibration_pairs=...)`` and
``rankwise export --calibration`` expect.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bm25_calibration_pairs"]


def bm25_calibration_pairs(dataset: str | Path, n_queries: int = 16, top_k: int = 32, split: str = "train",
                           data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """``n_queries x top_k`` (query, document text) pairs. Shapes: a list of ``n_queries * top_k`` pairs."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever

    ds = load_beir(dataset, split, data_dir=data_dir)
    docs = {d: ds.doc_text(d) for d in ds.corpus}
    qids = sorted(ds.qrels)[:n_queries]
    cands = BM25Retriever.from_corpus(docs).batch_search({q: ds.queries[q] for q in qids}, top_k)
    return [(ds.queries[q], docs[d]) for q, d in cands.select("qid", "docid").iter_rows()]
