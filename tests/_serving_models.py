"""Tiny randomly initialised model directories for the serving tests (built in seconds)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rankwise.rankers.base import Ranker
from rankwise.testing import tiny_bi_encoder_dir, tiny_cross_encoder_dir, tiny_recommender_dir, tiny_sasrec_dir  # noqa: F401 (re-exported)


def outlier_cross_encoder_dir(root: Path) -> Path:
    """``root/outlier``: the tiny cross-encoder (spread scores) with FFN hidden channel 3 ~50x larger than
    the others: its FFN-in row is scaled up and its FFN-out column down by the same factor (GELU is ~linear
    for large inputs, so the scores stay spread out). One int8 range per tensor then loses the other
    channels, so int8 reorders the scores."""
    from rankwise.rankers.cross_encoder import CrossEncoder

    ce = CrossEncoder.from_pretrained(tiny_cross_encoder_dir(root / "plain", initializer_range=0.2))
    with torch.no_grad():
        for layer in ce.model.bert.encoder.layer:
            layer.intermediate.dense.weight[3] *= 50.0
            layer.intermediate.dense.bias[3] *= 50.0
            layer.output.dense.weight[:, 3] /= 50.0
    ce.save_pretrained(root / "outlier")
    return root / "outlier"


class HashRanker(Ranker):
    """A deterministic stand-in ranker: score = a hash of (query, doc); optionally slow or failing.

    Args:
        delay_s: sleep per :meth:`score` call (to kill a job mid-run).
        fail_after: raise after this many calls (to crash a job in-process).
        log: a list that records every scored query.
    """

    def __init__(self, delay_s: float = 0.0, fail_after: int | None = None, log: list | None = None) -> None:
        self.delay_s, self.fail_after, self.log, self.calls = delay_s, fail_after, log, 0

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("HashRanker: simulated crash")
        self.calls += 1
        if self.log is not None:
            self.log.append(query)
        time.sleep(self.delay_s)
        return np.array([int(hashlib.sha1(f"{query}|{d}".encode()).hexdigest()[:8], 16) / 2**32 for d in docs])


def scifact_slice(data_dir: Path, out_dir: Path, n_queries: int = 12, per_query: int = 5) -> Path:
    """A small TREC run over real SciFact test queries: each query's judged docs + fixed others."""
    from rankwise.eval.datasets.beir import load_beir

    ds = load_beir(data_dir / "beir" / "scifact", "test")
    qids = sorted(ds.qrels)[:n_queries]
    others = sorted(ds.corpus)[:per_query]
    lines = []
    for qid in qids:
        docs = (list(ds.qrels[qid]) + [d for d in others if d not in ds.qrels[qid]])[:per_query]
        lines += [f"{qid} Q0 {d} {r + 1} {10.0 - r:.3f} bm25\n" for r, d in enumerate(docs)]
    run = out_dir / "candidates.trec"
    run.write_text("".join(lines))
    return run
