"""rankwise: LLM reranking and recommendation.

The package is laid out as ``rankwise.rankers`` (first stage, cross-encoders, LLM rankers, fusion),
``rankwise.train`` (objectives, trainers, SFT/GRPO), ``rankwise.recsys`` (sequential recommenders),
``rankwise.eval`` (datasets, metrics, run files) and ``rankwise.serving`` (ONNX export, the embedded
API, batch reranking). What users reach for first is importable from here; everything is imported
lazily, so ``import rankwise`` stays cheap.

Example:
    >>> import rankwise
    >>> sorted(n for n in rankwise.__all__ if n[0].isupper())
    ['BM25Retriever', 'DenseRetriever', 'Recommender', 'Reranker']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOME = {
    "Reranker": "rankwise.serving.api",
    "Recommender": "rankwise.serving.api",
    "load_beir": "rankwise.eval.datasets.beir",
    "load_bright": "rankwise.eval.datasets.bright",
    "evaluate": "rankwise.eval.metrics",
    "BM25Retriever": "rankwise.rankers.first_stage.bm25",
    "DenseRetriever": "rankwise.rankers.first_stage.dense",
}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")
