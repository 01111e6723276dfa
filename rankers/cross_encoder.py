"""Pointwise cross-encoder: ``[CLS] query [SEP] doc [SEP]`` → one relevance logit.

Two ways to read the pair's encoding (``pooling``):

* ``cls``: the model's own sequence-classification path (BERT: the pooler's ``tanh(W h_[CLS])``,
  then dropout and the one-logit classifier), as in monoBERT (Nogueira & Cho, 2019);
* ``mean``: the attention-masked mean of the last hidden states over every token of the pair, then
  dropout and the same classifier, skipping the pooler. A sentence-transformers bi-encoder such as
  all-MiniLM-L6-v2 was trained to make exactly this mean meaningful (its pooler and ``[CLS]`` state
  were never trained), so a cross-encoder started from it reads features the weights already carry.

Shapes: ``(N, T)`` token ids → ``(N,)`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Ranker
from rankwise.core.device import resolve_device, resolve_dtype
from rankwise.core.model_dir import read_rankwise_json, write_rankwise_json

__all__ = ["CrossEncoder"]

KIND = "cross-encoder"
POOLINGS = ("cls", "mean")


class CrossEncoder(Ranker):
    """Any HF encoder with a one-logit sequence-classification head, used as a reranker.

    Args:
        model: an ``AutoModelForSequenceClassification`` with ``num_labels=1``.
        tokenizer: its tokenizer.
        max_length: pairs are truncated to this many tokens (document side first).
        batch_size: pairs per forward pass in :meth:`score`.
        pooling: ``cls`` (the model's classification path) or ``mean`` (masked mean of the last
            hidden states into the classifier; BERT-style models with ``dropout`` + ``classifier``).

    Shapes:
        ``logits(queries, docs)``: ``(N,)`` for ``N`` pairs; ``score(query, docs)``: ``(len(docs),)``.

    Example:
        >>> ce = CrossEncoder.from_pretrained("path/to/trained-dir")  # doctest: +SKIP
        >>> ce.rerank("what is bm25", ["a ranking function", "a fish"])  # doctest: +SKIP
    """

    kind = KIND  # the ``rankwise.json`` kind; a subclass registered under another kind sets its own

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        batch_size: int = 32,
        pooling: str = "cls",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"CrossEncoder: pooling {pooling!r} is not one of {list(POOLINGS)}")
        if pooling == "mean" and not (hasattr(model, "classifier") and hasattr(model, "dropout") and hasattr(model, "base_model")):
            raise ValueError(f"CrossEncoder: pooling 'mean' needs a BERT-style model with dropout + classifier, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.pooling = pooling

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        max_length: int | None = None,
        batch_size: int = 32,
        pooling: str | None = None,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
        **model_kwargs,
    ) -> CrossEncoder:
        """Load a rankwise cross-encoder directory, or start one from any HF encoder (new head).

        ``pooling`` defaults to the directory's own (``rankwise.json``), else ``cls``; ``device``:
        ``auto`` / ``cuda`` / ``cpu``; ``dtype``: ``fp32`` / ``bf16`` / ``fp16`` (weights' dtype).
        """
        meta: dict = {}
        if (Path(name_or_path) / "rankwise.json").is_file():
            meta = read_rankwise_json(name_or_path, cls.kind)
        if dtype is not None:
            model_kwargs["dtype"] = resolve_dtype(dtype)
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=1, **model_kwargs)
        model.to(resolve_device(device))
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        return cls(model, tokenizer, max_length or meta.get("max_length", 256), batch_size, pooling or meta.get("pooling", "cls"))

    def save_pretrained(self, directory: str | Path, **extra) -> None:
        """Save weights (safetensors), tokenizer and ``rankwise.json``."""
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        write_rankwise_json(directory, self.kind, max_length=self.max_length, pooling=self.pooling, **extra)

    def init_head_bias(self, positive_rate: float) -> float:
        """Set the logit head's bias to ``log(p / (1 - p))``, so that a pointwise (BCE) start predicts
        the label prior and the first gradients go to features, not to the bias. Returns the bias."""
        p = min(max(float(positive_rate), 1e-4), 1 - 1e-4)
        head = self.model.get_submodule("classifier")
        if isinstance(head, torch.nn.Linear):
            layer = head
        else:  # e.g. RoBERTa: dense -> out_proj
            layer = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
        bias = torch.log(torch.tensor(p / (1 - p)))
        with torch.no_grad():
            layer.bias.fill_(bias.item())
        return float(bias)

    def pair_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        """Logits of tokenised pairs ``(N, T)`` -> ``(N,)`` through the configured pooling
        (``extra``: other tokenizer outputs, e.g. ``token_type_ids``)."""
        if self.pooling == "cls":
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.squeeze(-1)
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (N, D)
        return self.model.classifier(self.model.dropout(pooled)).squeeze(-1)

    def tokenize(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise pairs, truncating the document first, padded to the longest pair."""
        return self.tokenizer(
            list(queries), list(docs), truncation="longest_first", max_length=self.max_length,
            padding=True, return_tensors="pt",
        )

    def logits(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """Differentiable logits for pairs ``(queries[i], docs[i])``: ``(N,)``."""
        batch = {k: v.to(self.model.device) for k, v in self.tokenize(queries, docs).items()}
        return self.pair_logits(**batch)

    @torch.inference_mode()
    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        self.model.eval()
        out = [
            self.logits([query] * len(chunk), chunk).float().cpu().numpy()
            for chunk in (docs[i : i + self.batch_size] for i in range(0, len(docs), self.batch_size))
        ]
        return np.concatenate(out) if out else np.zeros(0)
