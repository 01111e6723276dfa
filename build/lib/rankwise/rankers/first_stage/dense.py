"""Dense first-stage retrieval: a bi-encoder and a faiss inner-product index (exact or HNSW)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum

import numpy as np
import polars as pl

from rankwise.rankers.base import CANDIDATE_SCHEMA, Hit
from rankwise.rankers.bi_encoder import BiEncoder

__all__ = ["DenseRetriever", "IndexKind"]


class IndexKind(str, Enum):
    flat = "flat"  # faiss.IndexFlatIP: exact
    hnsw = "hnsw"  # faiss.IndexHNSWFlat (inner product): approximate


def _faiss():
    import faiss

    return faiss


def _gpu_if_available(index):
    faiss = _faiss()
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and isinstance(index, faiss.IndexFlat):
        return faiss.index_cpu_to_all_gpus(index)
    return index


class DenseRetriever:
    """Exact or HNSW maximum-inner-product search over unit-norm document vectors (= cosine).

    Args:
        encoder: the bi-encoder (default: the bundled all-MiniLM-L6-v2).
        docids: ids of the indexed vectors, in index order.
        index: a faiss index holding their vectors.

    Example:
        >>> dense = DenseRetriever.from_corpus({"a": "bm25 ranking", "b": "a fish"})  # doctest: +SKIP
        >>> dense.search("ranking function", k=1)[0].docid  # doctest: +SKIP
        'a'
    """

    def __init__(self, encoder: BiEncoder, docids: Sequence[str], index) -> None:
        self.encoder = encoder
        self.docids = list(docids)
        self._index = index

    @classmethod
    def from_corpus(
        cls,
        docs: Mapping[str, str],
        encoder: BiEncoder | None = None,
        index: IndexKind | str = IndexKind.flat,
        hnsw_m: int = 32,
        ef_search: int = 128,
        progress: bool = False,
    ) -> DenseRetriever:
        """Encode ``docid -> text`` (cached vectors) and build the faiss index (GPU when faiss-gpu sees one)."""
        faiss = _faiss()
        encoder = encoder or BiEncoder()
        ids = list(docs)
        vectors = np.ascontiguousarray(encoder.encode_documents([docs[d] for d in ids], progress=progress))
        if IndexKind(index) is IndexKind.flat:
            built = _gpu_if_available(faiss.IndexFlatIP(encoder.dim))
        else:
            built = faiss.IndexHNSWFlat(encoder.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            built.hnsw.efSearch = ef_search
        built.add(vectors)
        return cls(encoder, ids, built)

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self.docids)))

    def search(self, query: str, k: int = 100) -> list[Hit]:
        scores, idx = self._search(self.encoder.encode_queries([query]), k)
        return [Hit(self.docids[i], float(s), r + 1) for r, (s, i) in enumerate(zip(scores[0], idx[0])) if i >= 0]

    def batch_search(self, queries: Mapping[str, str], k: int = 100) -> pl.DataFrame:
        """Top-``k`` for every ``qid -> text``, as a candidate set."""
        qids = list(queries)
        scores, idx = self._search(self.encoder.encode_queries([queries[q] for q in qids]), k)
        rows = [
            (qid, self.docids[i], float(s), r + 1)
            for qid, ss, ii in zip(qids, scores, idx)
            for r, (s, i) in enumerate((s, i) for s, i in zip(ss, ii) if i >= 0)
        ]
        return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA, orient="row")
