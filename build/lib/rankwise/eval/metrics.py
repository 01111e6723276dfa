"""IR metrics from qrels and a run, computed the way ``trec_eval`` does (cross-checked with pytrec_eval).

Conventions (those of ``trec_eval``):
- a run is ordered by descending score, ties broken by descending docid; ranks in the file are ignored;
- a document is relevant when its grade is > 0; unjudged documents have grade 0;
- nDCG@k uses gain = grade and discount 1/log2(rank + 1); the ideal ranking sorts all judged grades;
- Recall@k = |relevant ∩ top-k| / |relevant|; MRR@k = 1 / rank of the first relevant in the top k (0 if none);
  MAP@k (``map_cut``) = Σ_{relevant d in top k} precision@rank(d) / |relevant|;
- the mean is over the queries of the qrels that have at least one relevant document; a query missing
  from the run scores 0 (``trec_eval -c``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

__all__ = ["evaluate", "per_query", "parse_metric", "run_from_candidates", "SUPPORTED"]

SUPPORTED = ("ndcg", "recall", "mrr", "map", "p")

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; ``"map"`` → ``("map", None)``."""
    base, _, cut = name.lower().partition("@")
    if base not in SUPPORTED:
        raise ValueError(f"unknown metric {name!r}: choose from {', '.join(m + '@k' for m in SUPPORTED)}")
    if cut and not cut.isdigit():
        raise ValueError(f"metric {name!r}: the cut-off after '@' must be a positive integer")
    return base, int(cut) if cut else None


def _ordered(docs: Mapping[str, float]) -> list[str]:
    # trec_eval: descending score, then descending docid
    return [d for d, _ in sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def _one(metric: str, k: int | None, ranked: list[str], judged: Mapping[str, int]) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    top = ranked[:k] if k else ranked
    if metric == "ndcg":
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top) if judged.get(d, 0) > 0)
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[: k or None]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        return dcg / idcg if idcg > 0 else 0.0
    if metric == "recall":
        return sum(d in relevant for d in top) / len(relevant)
    if metric == "p":
        return sum(d in relevant for d in top) / (k or max(len(top), 1))
    if metric == "mrr":
        return next((1.0 / (i + 1) for i, d in enumerate(top) if d in relevant), 0.0)
    # map
    hits, total = 0, 0.0
    for i, d in enumerate(top):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def per_query(qrels: Qrels, run: Run, metrics: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{metric: {qid: value}}`` for every qrels query with at least one relevant document."""
    parsed = {m: parse_metric(m) for m in metrics}
    out: dict[str, dict[str, float]] = {m: {} for m in parsed}
    for qid, judged in qrels.items():
        if not any(g > 0 for g in judged.values()):
            continue
        ranked = _ordered(run.get(qid, {}))
        for name, (metric, k) in parsed.items():
            out[name][qid] = _one(metric, k, ranked, judged)
    return out


def evaluate(qrels: Qrels, run: Run | pl.DataFrame, metrics: Iterable[str] = ("ndcg@10", "recall@100")) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    Args:
        qrels: ``qid -> {docid: grade}``.
        run: ``qid -> {docid: score}`` or a candidate set DataFrame (``qid, docid, score``).
        metrics: names like ``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@100``, ``map``, ``p@10``.

    Example:
        >>> evaluate({"q": {"a": 1}}, {"q": {"a": 0.2, "b": 0.9}}, ["ndcg@10", "mrr@10"])
        {'ndcg@10': 0.6309297535714575, 'mrr@10': 0.5}
    """
    if isinstance(run, pl.DataFrame):
        run = run_from_candidates(run)
    scores = per_query(qrels, run, metrics)
    return {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in scores.items()}


def run_from_candidates(candidates: pl.DataFrame) -> dict[str, dict[str, float]]:
    """A candidate set as ``qid -> {docid: score}``."""
    run: dict[str, dict[str, float]] = {}
    for qid, docid, score in candidates.select("qid", "docid", "score").iter_rows():
        run.setdefault(qid, {})[docid] = float(score)
    return run
