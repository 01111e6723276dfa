"""Trainable bi-encoder reranker: ``score = scale * cos(E_q(query), E_d(doc))``, query tower fine-tuned.

The document tower is a frozen bi-encoder (by default the bundled all-MiniLM-L6-v2) whose vectors are
cached on disk, so a corpus is encoded once and training or reranking costs one short query pass
per list. The query tower starts from the same weights and is fine-tuned with any objective of
:mod:`train.losses`; a learned ``scale`` (inverse temperature) turns the cosine into a logit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Ranker
from rankwise.rankers.bi_encoder import BiEncoder, default_encoder_path
from rankwise.core.device import resolve_device, resolve_dtype
from rankwise.core.model_dir import read_rankwise_json, write_rankwise_json

__all__ = ["TrainableBiEncoder", "QueryTower"]

KIND = "bi-encoder"
BUNDLED = "bundled:all-MiniLM-L6-v2"
ADAPTER_FILE = "query_adapter.safetensors"


class QueryTower(nn.Module):
    """HF encoder + mean pooling, an optional linear adapter, L2 normalisation, and the learned log-scale.

    Args:
        encoder: the HF encoder (``AutoModel``).
        scale: initial ``exp(log_scale)``.
        adapter: add a ``D x D`` linear map after pooling, initialised to the identity (so the
            untrained tower equals the plain bi-encoder).
        train_encoder: ``False`` freezes the encoder (only the adapter and the scale train).

    Shapes: ``pool(input_ids, attention_mask)``: ``(N, T)`` -> ``(N, D)``; ``head(pooled)``:
    ``(N, D)`` -> ``(N, D)`` unit vectors; ``forward`` = ``head(pool(...))``.
    """

    def __init__(self, encoder: PreTrainedModel, scale: float = 20.0, adapter: bool = False, train_encoder: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.adapter: nn.Linear | None = None
        if adapter:
            dim = int(encoder.config.hidden_size)
            self.adapter = nn.Linear(dim, dim)
            with torch.no_grad():
                self.adapter.weight.copy_(torch.eye(dim))
                self.adapter.bias.zero_()
        self.encoder.requires_grad_(train_encoder)

    @property
    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, T, D)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (N, D)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            pooled = self.adapter(pooled)  # (N, D)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(input_ids, attention_mask))


class TrainableBiEncoder(Ranker):
    """Scaled-cosine reranker with a trainable query tower and a frozen, cached document tower.

    Formula:
        ``s(q, d) = exp(log_scale) * <E_q(q), E_d(d)>`` with unit-norm mean-pooled vectors.

    Paper:
        Sentence-BERT (Reimers & Gurevych, 2019, https://arxiv.org/abs/1908.10084) scoring.
        Ours: freezing the document tower (asymmetric fine-tuning) so that documents are encoded
        once; before any training the score is the bundled bi-encoder's cosine, a 0.67-level
        ranker on SciFact rather than the near-random start of a fresh cross-encoder head.

    Args:
        query_tower: the trainable :class:`QueryTower`.
        tokenizer: the query tower's tokenizer.
        doc_encoder: the frozen document bi-encoder (disk-cached vectors).
        doc_encoder_ref: how ``rankwise.json`` names the document tower (``bundled:...``, a hub id,
            or ``doc_encoder`` for a copy saved inside the directory).
        max_length: token limit for queries.
        doc_max_length: token limit of the document tower (its vectors are cached per limit).

    Shapes:
        ``logits(queries, docs)``: ``(N,)`` for ``N`` pairs; ``score(query, docs)``: ``(len(docs),)``.

    Example:
        >>> ranker = TrainableBiEncoder.from_pretrained()  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a ranking function", "a fish"])  # doctest: +SKIP
    """

    def __init__(
        self,
        query_tower: QueryTower,
        tokenizer: PreTrainedTokenizerBase,
        doc_encoder: BiEncoder,
        doc_encoder_ref: str,
        max_length: int = 128,
        doc_max_length: int = 256,
    ) -> None:
        self.model = query_tower
        self.tokenizer = tokenizer
        self.doc_encoder = doc_encoder
        self.doc_encoder_ref = doc_encoder_ref
        self.max_length = max_length
        self.doc_max_length = doc_max_length
        self._pooled: dict[str, torch.Tensor] = {}  # query text -> pooled vector, while the encoder is frozen
        self._doc_vectors: dict[str, torch.Tensor] = {}  # document text -> vector (the document tower is frozen)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        max_length: int | None = None,
        scale: float = 20.0,
        cache: bool = True,
        doc_max_length: int | None = None,
        query_adapter: bool = False,
        train_encoder: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> TrainableBiEncoder:
        """Load a saved ``bi-encoder`` directory, or start from any encoder (default: the bundled
        all-MiniLM-L6-v2), whose frozen copy becomes the document tower. ``device``: ``auto`` /
        ``cuda`` / ``cpu`` for both towers; ``dtype``: the query tower's weights (``fp32`` / ``bf16`` / ``fp16``).

        ``query_adapter`` / ``train_encoder`` (new models only; saved ones keep their own): add an
        identity-initialised linear adapter after pooling / fine-tune the query encoder itself.
        With ``train_encoder=False`` the pooled query vectors are cached, so training is nearly free."""
        path = Path(name_or_path) if name_or_path is not None else default_encoder_path()
        if (path / "rankwise.json").is_file():
            meta = read_rankwise_json(path, KIND)
            ref = meta["doc_encoder"]
            doc_path = default_encoder_path() if ref == BUNDLED else (path / ref if ref == "doc_encoder" else ref)
            length = max_length or int(meta.get("max_length", 128))
            doc_length = doc_max_length or int(meta.get("doc_max_length", 256))
            tower = QueryTower(AutoModel.from_pretrained(str(path)), float(meta.get("scale", scale)),
                               adapter=bool(meta.get("query_adapter", False)), train_encoder=bool(meta.get("train_encoder", True)))
            if tower.adapter is not None:
                from safetensors.torch import load_file

                tower.adapter.load_state_dict(load_file(str(path / ADAPTER_FILE)))
            doc_encoder = BiEncoder(doc_path, max_length=doc_length, cache=cache, device=str(resolve_device(device)))
            return cls._placed(cls(tower, AutoTokenizer.from_pretrained(str(path)), doc_encoder, ref, length, doc_length), device, dtype)
        length, doc_length = max_length or 128, doc_max_length or 256
        bundled = path.resolve() == default_encoder_path().resolve() if path.exists() else False
        ref = BUNDLED if bundled else ("doc_encoder" if path.exists() else str(name_or_path))
        tower = QueryTower(AutoModel.from_pretrained(str(path)), scale, adapter=query_adapter, train_encoder=train_encoder)
        doc_encoder = BiEncoder(path, max_length=doc_length, cache=cache, device=str(resolve_device(device)))
        return cls._placed(cls(tower, AutoTokenizer.from_pretrained(str(path)), doc_encoder, ref, length, doc_length), device, dtype)

    @staticmethod
    def _placed(ranker: TrainableBiEncoder, device: str | torch.device | None, dtype: str | torch.dtype | None) -> TrainableBiEncoder:
        ranker.model.to(resolve_device(device))
        if dtype is not None:
            ranker.model.to(resolve_dtype(dtype))
        return ranker

    @property
    def scale(self) -> float:
        return float(self.model.log_scale.detach().exp())

    def save_pretrained(self, directory: str | Path, **extra) -> None:
        """Save the query tower (safetensors), tokenizer, the document tower if it is not a
        reference, and ``rankwise.json`` (kind ``bi-encoder``, scale, max length)."""
        directory = Path(directory)
        self.model.encoder.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        if self.model.adapter is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in self.model.adapter.state_dict().items()}, str(directory / ADAPTER_FILE))
        if self.doc_encoder_ref == "doc_encoder" and not (directory / "doc_encoder").is_dir():
            self.doc_encoder.model.save(str(directory / "doc_encoder"))
        write_rankwise_json(
            directory, KIND, max_length=self.max_length, doc_max_length=self.doc_max_length, scale=self.scale, pooling="mean",
            doc_encoder=self.doc_encoder_ref, query_adapter=self.model.adapter is not None,
            train_encoder=not self.model.encoder_frozen, **extra,
        )

    def encode_queries(self, queries: Sequence[str]) -> torch.Tensor:
        """Differentiable unit query vectors. Shapes: ``(N, D)``.

        With a frozen encoder only the adapter is differentiable and pooled vectors are cached."""
        if not self.model.encoder_frozen:
            return self.model(**self._tokenize(queries))
        missing = list(dict.fromkeys(q for q in queries if q not in self._pooled))
        if missing:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors: reusable in training
                pooled = self.model.pool(**self._tokenize(missing))  # (M, D)
            self._pooled.update(zip(missing, pooled))
        return self.model.head(torch.stack([self._pooled[q] for q in queries]))

    def document_vectors(self, docs: Sequence[str]) -> torch.Tensor:
        """Frozen document vectors, memoised in memory by text (the disk cache sits behind).

        Shapes: ``(N, D)``."""
        missing = list(dict.fromkeys(d for d in docs if d not in self._doc_vectors))
        if missing:
            self._doc_vectors.update(zip(missing, torch.from_numpy(self.doc_encoder.encode_documents(missing))))
        return torch.stack([self._doc_vectors[d] for d in docs])

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def logits(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """Differentiable scores for pairs ``(queries[i], docs[i])``: each distinct query is encoded
        once, documents come from the frozen cached tower. Shapes: ``(N,)``."""
        unique = list(dict.fromkeys(queries))
        index = {q: i for i, q in enumerate(unique)}
        q = self.encode_queries(unique)  # (Q, D)
        d = self.document_vectors(docs)  # (N, D)
        rows = torch.tensor([index[x] for x in queries])
        return self.model.log_scale.exp() * (q[rows] * d).sum(dim=-1)

    @torch.inference_mode()
    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        if not docs:
            return np.zeros(0)
        self.model.eval()
        return self.logits([query] * len(docs), docs).float().numpy()
