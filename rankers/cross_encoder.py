"""Pointwise cross-encoder: ``[CLS] query [SEP] doc [SEP]`` → one relevance logit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Ranker
from rankwise.rankers.model_dir import read_rankwise_json, write_rankwise_json

__all__ = ["CrossEncoder"]

KIND = "cross-encoder"


class CrossEncoder(Ranker):
    """Any HF encoder with a one-logit sequence-classification head, used as a reranker.

    Args:
        model: an ``AutoModelForSequenceClassification`` with ``num_labels=1``.
        tokenizer: its tokenizer.
        max_length: pairs are truncated to this many tokens (document side first).
        batch_size: pairs per forward pass in :meth:`score`.

    Shapes:
        ``logits(queries, docs)``: ``(N,)`` for ``N`` pairs; ``score(query, docs)``: ``(len(docs),)``.

    Example:
        >>> ce = CrossEncoder.from_pretrained("path/to/trained-dir")  # doctest: +SKIP
        >>> ce.rerank("what is bm25", ["a ranking function", "a fish"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, max_length: int | None = None, batch_size: int = 32, **model_kwargs
    ) -> CrossEncoder:
        """Load a rankwise cross-encoder directory, or start one from any HF encoder (new head)."""
        meta: dict = {}
        if (Path(name_or_path) / "rankwise.json").is_file():
            meta = read_rankwise_json(name_or_path, KIND)
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=1, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        return cls(model, tokenizer, max_length or meta.get("max_length", 256), batch_size)

    def save_pretrained(self, directory: str | Path, **extra) -> None:
        """Save weights (safetensors), tokenizer and ``rankwise.json``."""
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        write_rankwise_json(directory, KIND, max_length=self.max_length, **extra)

    def tokenize(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise pairs, truncating the document first, padded to the longest pair."""
        return self.tokenizer(
            list(queries), list(docs), truncation="longest_first", max_length=self.max_length,
            padding=True, return_tensors="pt",
        )

    def logits(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """Differentiable logits for pairs ``(queries[i], docs[i])``: ``(N,)``."""
        batch = {k: v.to(self.model.device) for k, v in self.tokenize(queries, docs).items()}
        return self.model(**batch).logits.squeeze(-1)

    @torch.inference_mode()
    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        self.model.eval()
        out = [
            self.logits([query] * len(chunk), chunk).float().cpu().numpy()
            for chunk in (docs[i : i + self.batch_size] for i in range(0, len(docs), self.batch_size))
        ]
        return np.concatenate(out) if out else np.zeros(0)
