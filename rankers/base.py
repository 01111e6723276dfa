"""The ranker protocol and the candidate set, the one currency between stages.

A *candidate set* is a polars DataFrame with columns ``qid: str, docid: str, score: f64,
rank: i64`` (rank is 1-based, per query, by descending score). Every ranker implements
:meth:`Ranker.score`; :meth:`Ranker.rerank` and :meth:`Ranker.rerank_candidates` are built on it
and may be overridden by rankers that produce an order directly (listwise, iterative).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

CANDIDATE_SCHEMA = {"qid": pl.String, "docid": pl.String, "score": pl.Float64, "rank": pl.Int64}

__all__ = ["CANDIDATE_SCHEMA", "Hit", "Ranker", "rank_by_score", "candidates_from_hits", "group_candidates"]


@dataclass(frozen=True)
class Hit:
    """One ranked document: its id, score and 1-based rank."""

    docid: str
    score: float
    rank: int


def rank_by_score(candidates: pl.DataFrame) -> pl.DataFrame:
    """Sort each query's rows by descending score (ties by docid) and renumber ``rank`` 1..n."""
    return (
        candidates.sort(["qid", "score", "docid"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("qid").cast(pl.Int64).alias("rank"))
        .select(list(CANDIDATE_SCHEMA))
    )


def group_candidates(candidates: pl.DataFrame, top_k: int | None = None) -> list[tuple[str, list[str]]]:
    """``[(qid, [docid, ...]), ...]`` in first-stage rank order, each cut to ``top_k``."""
    return [
        (qid, group["docid"].to_list()[: top_k or None])
        for (qid,), group in candidates.sort(["qid", "rank"]).group_by(["qid"], maintain_order=True)
    ]


def candidates_from_hits(hits: Mapping[str, Sequence[Hit]]) -> pl.DataFrame:
    """Build a candidate set from ``{qid: [Hit, ...]}``."""
    rows = [(qid, h.docid, float(h.score), int(h.rank)) for qid, hs in hits.items() for h in hs]
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA, orient="row")


class Ranker:
    """Base class of every reranker: subclasses implement :meth:`score`.

    Example:
        >>> class Overlap(Ranker):
        ...     def score(self, query, docs):
        ...         return np.array([len(set(query.split()) & set(d.split())) for d in docs], float)
        >>> [h.docid for h in Overlap().rerank("a b", ["a", "a b", "c"])]
        ['1', '0', '2']
    """

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Relevance scores for ``docs`` given ``query``. Shapes: returns ``(len(docs),)`` float."""
        raise NotImplementedError

    def rerank(
        self,
        query: str,
        docs: Sequence[str],
        top_k: int | None = None,
        docids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Order ``docs`` by :meth:`score`; ids default to the input positions as strings."""
        if not docs:
            return []
        ids = list(docids) if docids is not None else [str(i) for i in range(len(docs))]
        if len(ids) != len(docs):
            raise ValueError(f"rerank: {len(docs)} docs but {len(ids)} docids")
        scores = np.asarray(self.score(query, docs), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return [Hit(ids[i], float(scores[i]), r + 1) for r, i in enumerate(order)]

    def rerank_candidates(
        self,
        candidates: pl.DataFrame,
        queries: Mapping[str, str],
        doc_text: Callable[[str], str] | Mapping[str, str],
        top_k: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> pl.DataFrame:
        """Batch twin of :meth:`rerank`, keyed by query id.

        Args:
            candidates: candidate set (``qid, docid, score, rank``); each query's rows are rescored.
            queries: ``qid -> query text``.
            doc_text: ``docid -> document text`` (a mapping or a function).
            top_k: keep only the first ``top_k`` first-stage candidates of each query.
            progress: called with the number of documents scored after each query.
        """
        lookup = doc_text.__getitem__ if isinstance(doc_text, Mapping) else doc_text
        hits: dict[str, list[Hit]] = {}
        for qid, ids in group_candidates(candidates, top_k):
            hits[qid] = self._rerank_query(qid, queries[qid], [lookup(d) for d in ids], ids)
            if progress is not None:
                progress(len(ids))
        return candidates_from_hits(hits)

    def _rerank_query(self, qid: str, query: str, docs: list[str], ids: list[str]) -> list[Hit]:
        """One query of :meth:`rerank_candidates` (a ranker that uses the query id overrides this)."""
        return self.rerank(query, docs, docids=ids)
