"""Dev-set evaluation for early stopping: nDCG@10 of a trainable ranker on held-out train queries.

The trainer calls the evaluator every ``eval_steps`` steps (see
:class:`rankwise.train.cross_encoder_trainer.CrossEncoderTrainer`); it scores each held-out query's
first-stage candidates with the model's own ``logits`` (no gradient, eval mode) and returns the mean
nDCG@10 over those queries (queries without a relevant candidate count as 0, as in trec_eval).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl
import torch

from rankwise.eval.metrics import evaluate

__all__ = ["dev_ndcg_evaluator", "split_dev_queries"]


def split_dev_queries(qrels: Mapping[str, Mapping[str, int]], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Queries with a positive, shuffled by ``seed`` and cut into (fit, dev) with ``fraction`` in dev."""
    import random

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split_dev_queries: fraction must be in (0, 1), got {fraction}")
    qids = sorted(q for q, rel in qrels.items() if any(g > 0 for g in rel.values()))
    random.Random(seed).shuffle(qids)
    cut = max(1, round(fraction * len(qids)))
    return sorted(qids[cut:]), sorted(qids[:cut])


def dev_ndcg_evaluator(
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[tuple[str, str]]],
    qrels: Mapping[str, Mapping[str, int]],
    batch_size: int = 64,
    metric: str = "ndcg@10",
) -> Callable[[object], float]:
    """An evaluator ``ranker -> metric`` over ``candidates[qid] = [(docid, text), ...]``.

    Shapes: every call scores ``sum_q len(candidates[q])`` pairs in batches of ``batch_size``.
    """
    pairs = [(q, d, queries[q], text) for q in candidates for d, text in candidates[q]]
    judged = {q: dict(qrels[q]) for q in candidates if q in qrels}

    def run(ranker) -> float:
        scores: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(pairs), batch_size):
                chunk = pairs[i : i + batch_size]
                scores.extend(ranker.logits([p[2] for p in chunk], [p[3] for p in chunk]).float().cpu().tolist())
        frame = pl.DataFrame({"qid": [p[0] for p in pairs], "docid": [p[1] for p in pairs], "score": scores})
        frame = frame.with_columns(pl.col("score").rank("ordinal", descending=True).over("qid").cast(pl.Int64).alias("rank"))
        return float(evaluate(judged, frame, [metric])[metric])

    return run
