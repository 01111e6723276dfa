"""A :class:`~rankers.base.Ranker` served by onnxruntime from an export directory."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rankwise.rankers.base import Ranker
from rankwise.serving.cascade import head_indices, merge_head
from rankwise.serving.export import read_serving_json
from rankwise.serving.runtime import (Device, OnnxSession, Runtime, bucket_batches, pad_batch, serving_runtime,
                                      shared_prefix_length)

__all__ = ["OnnxRanker"]

log = logging.getLogger("rankwise.serving")


class OnnxRanker(Ranker):
    """Score (query, document) pairs with an exported pair-scoring graph.

    Cross-encoders take the tokenised pair and return the logit; ERank takes the chat prompt the
    PyTorch ranker builds (document cut to ``max_doc_tokens``, left-padded) and returns the
    expected relevance integer computed inside the graph; the bi-encoder takes the query once and
    the documents (bucketed) and returns ``scale * cosine``.

    Pairs are tokenised once without padding, grouped into length buckets
    (:func:`~serving.runtime.bucket_batches`) and padded per bucket, so short pairs do not pay
    for long ones. Pairs longer than ``max_length`` are cut (document first) with a warning, given once.
    An export with an exact head (``export_model(..., exact_head=k)``) also carries the fp32 graph:
    the quantised graph scores every document and the fp32 graph rescores its top ``k`` with the
    same token ids (:mod:`serving.cascade`).
    One instance is safe to share across threads: tokenisation is serialised by a lock (HF fast
    tokenizers are not re-entrant), the onnxruntime session runs concurrently.

    Args:
        directory: an export directory written by :func:`serving.export.export_model`.
        device: ``"auto"``, ``"cuda"`` or ``"cpu"`` (see :class:`~serving.runtime.OnnxSession`).
        threads: onnxruntime intra-op threads (``None``: its default).
        batch_size: at most this many pairs per run.
        max_tokens: at most this many padded tokens per run (``batch * longest``).
        exact_head: documents rescored by the export's fp32 head graph (``None``: the export's
            ``k``; 0: off). An error if the export has no head graph and this is > 0.
        runtime: ``"auto"`` (the export's runtime, onnxruntime on CUDA), ``"onnxruntime"`` or
            ``"openvino"`` (:func:`~serving.runtime.serving_runtime`).

    Shapes:
        ``score(query, docs)``: returns ``(len(docs),)`` float64.

    Example:
        >>> ranker = OnnxRanker("runs/ce-minilm-onnx", device="cpu", threads=2)  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a ranking function", "a fish"], top_k=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | Path,
        device: Device = "auto",
        threads: int | None = None,
        batch_size: int = 32,
        max_tokens: int | None = 32 * 256,
        exact_head: int | None = None,
        runtime: Runtime = "auto",
    ) -> None:
        from transformers import AutoTokenizer

        self.directory = Path(directory)
        self.meta = read_serving_json(self.directory)
        if self.meta.get("task") != "pair-score":
            raise ValueError(f"{self.directory}: kind {self.meta['kind']!r} is not a (query, document) scorer")
        if serving_runtime(self.meta, runtime, device, self.directory) == "openvino":
            from rankwise.serving.openvino_runtime import OpenVINOSession

            self.session = OpenVINOSession(self.directory / self.meta["openvino_file"],
                                           precision=self.meta.get("openvino_precision", "bf16"), threads=threads)
        else:
            self.session = OnnxSession(self.directory / self.meta["onnx_file"], device=device, intra_op_threads=threads)
        head = self.meta.get("exact_head") or {}
        self.exact_head = int(head.get("k", 0)) if exact_head is None else exact_head
        if self.exact_head < 0 or (self.exact_head and not head):
            raise ValueError(f"{self.directory}: exact_head={self.exact_head} needs an export with an fp32 head graph "
                             "(rankwise export --quantize ... --exact-head K) and must be >= 0")
        self.head_session = (OnnxSession(self.directory / head["onnx_file"], device=device, intra_op_threads=threads)
                             if self.exact_head else None)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory))
        self.encoding = self.meta.get("encoding", "pair")  # pair | prompt | bi-encoder
        self.max_length = self.meta.get("max_length")
        self.padding_side = self.meta.get("padding_side", "right")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        pad = self.meta.get("pad_token_id")
        self.pad_id = int(pad if pad is not None else self.tokenizer.pad_token_id or 0)
        self.doc_tokenizer = None
        if self.encoding == "bi-encoder":
            self.doc_tokenizer = AutoTokenizer.from_pretrained(str(self.directory / "doc_tokenizer"))
            self.pad_id = int(self.meta.get("doc_pad_token_id") or 0)
        self._tokenizer_lock = threading.Lock()
        self._warned_truncation = False

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the session runs."""
        return self.session.device

    def _warn_cut(self, cut: int, total: int, limit: int) -> None:
        if cut and not self._warned_truncation:
            self._warned_truncation = True
            log.warning(
                "rankwise: %d of %d pairs reached max_length=%d and were truncated (reported once per model)",
                cut, total, limit,
            )

    def _encode(self, query: str, docs: Sequence[str]) -> tuple[list[dict[str, list[int]]], dict[str, np.ndarray]]:
        """Per-document rows to bucket and pad, and the feeds shared by every batch (the query)."""
        with self._tokenizer_lock:
            if self.encoding == "prompt":
                return self._encode_prompts(query, docs)
            if self.encoding == "bi-encoder":
                return self._encode_bi(query, docs)
            enc = self.tokenizer(
                [query] * len(docs), list(docs), truncation=self.meta.get("truncation", "longest_first"),
                max_length=self.max_length, padding=False,
            )
        rows = [{n: enc[n][i] for n in self.meta["inputs"]} for i in range(len(docs))]
        self._warn_cut(sum(len(r["input_ids"]) >= self.max_length for r in rows), len(rows), self.max_length)
        return rows, {}

    def _encode_prompts(self, query: str, docs: Sequence[str]) -> tuple[list[dict[str, list[int]]], dict[str, np.ndarray]]:
        """LLM prompts exactly as the PyTorch ranker builds them, plus the readout's appended ids; for a
        shared-prefix export, the ids every prompt starts with go once into the shared feeds and the
        rows keep the rest (:func:`~serving.runtime.shared_prefix_length`)."""
        from rankwise.rankers.erank import erank_prompt
        from rankwise.rankers.llm import truncate_text

        prompts = []
        for doc in docs:
            text = truncate_text(self.tokenizer, doc, int(self.meta["max_doc_tokens"]))
            prompt = erank_prompt(self.tokenizer, query, text, self.meta["readout"])
            prompts.append(self.tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(self.meta["append_ids"]))
        cut, shared = 0, {}
        if self.meta.get("shared_prefix"):
            cut = shared_prefix_length(prompts, own=len(self.meta["append_ids"]) + 1)
            shared = {"prefix_ids": np.asarray([prompts[0][:cut]], dtype=np.int64)}
        return [{"input_ids": ids[cut:], "attention_mask": [1] * (len(ids) - cut)} for ids in prompts], shared

    def _encode_bi(self, query: str, docs: Sequence[str]) -> tuple[list[dict[str, list[int]]], dict[str, np.ndarray]]:
        """The query once (shared by every batch), the documents with the document tokenizer."""
        q = self.tokenizer([query], truncation=True, max_length=self.max_length, return_tensors="np")
        limit = int(self.meta["doc_max_length"])
        enc = self.doc_tokenizer(list(docs), truncation=True, max_length=limit, padding=False)
        rows = [{"doc_input_ids": ids, "doc_attention_mask": m} for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
        self._warn_cut(sum(len(r["doc_input_ids"]) >= limit for r in rows), len(rows), limit)
        shared = {"query_input_ids": q["input_ids"].astype(np.int64), "query_attention_mask": q["attention_mask"].astype(np.int64)}
        return rows, shared

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        if not docs:
            return np.zeros(0)
        rows, shared = self._encode(query, docs)
        scores = self._run(self.session, rows, shared)
        if self.head_session is None:
            return scores
        head = head_indices(scores, self.exact_head)
        exact = self._run(self.head_session, [rows[i] for i in head], shared)
        return merge_head(scores, head, exact)

    def _run(self, session: OnnxSession, rows: list[dict[str, list[int]]], shared: dict[str, np.ndarray]) -> np.ndarray:
        """``(len(rows),)`` float64 scores of ``session`` over length-bucketed, padded batches of ``rows``."""
        names = [n for n in self.meta["inputs"] if n not in shared]
        scores = np.empty(len(rows), dtype=np.float64)
        for idx in bucket_batches([len(r[names[0]]) for r in rows], self.batch_size, self.max_tokens):
            feeds = pad_batch([rows[i] for i in idx], self.pad_id, names, self.padding_side) | shared
            scores[idx] = session.run(feeds).reshape(len(idx))  # (b,)
        return scores
