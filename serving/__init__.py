"""Serving: ONNX export, onnxruntime sessions, the embedded library and offline batch reranking.

- :func:`serving.export.export_model` — a model directory → ``model.onnx`` + ``serving.json``, checked
  against PyTorch on real inputs (fp32, int8, int8-smooth via :mod:`serving.smooth_quant`, int8-blockwise, fp16).
  ``exact_head=k`` ships the fp32 graph too and rescores each query's top k with it (:mod:`serving.cascade`).
- :class:`serving.runtime.OnnxSession` — CUDA when available, else CPU with a one-line notice.
- :class:`serving.api.Reranker` / :class:`serving.api.Recommender` — ``load(dir)`` then ``rerank`` /
  ``recommend``, safe to share across threads.
- :func:`serving.batch.run_batch_rerank` — chunked, resumable batch reranking (local or Ray).
"""

from rankwise.serving.api import ItemHit, Recommender, Reranker
from rankwise.serving.batch import BatchRerankConfig, BatchResult, run_batch_rerank
from rankwise.serving.export import ExportParityError, ExportResult, export_model
from rankwise.serving.onnx_ranker import OnnxRanker
from rankwise.serving.runtime import OnnxSession

__all__ = [
    "BatchRerankConfig",
    "BatchResult",
    "ExportParityError",
    "ExportResult",
    "ItemHit",
    "OnnxRanker",
    "OnnxSession",
    "Recommender",
    "Reranker",
    "export_model",
    "run_batch_rerank",
]
