"""The embedded library: load a reranker or a recommender from a directory and call it from any thread.

Both loaders accept a PyTorch model directory (``rankwise.json``) or an ONNX export directory
(``serving.json``, written by :func:`serving.export.export_model`) and raise
:class:`~rankers.model_dir.ModelDirError` with one line naming the file at fault when the directory
is missing, corrupt or of the wrong kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.rankers.base import Hit, Ranker
from rankwise.core.model_dir import RANKWISE_JSON, ModelDirError, read_rankwise_json
from rankwise.serving._kinds import RECOMMENDER_CLASSES, load_class, ranker_classes
from rankwise.serving.export import SERVING_JSON, read_serving_json
from rankwise.serving.runtime import Device, Runtime

__all__ = ["Reranker", "Recommender", "ItemHit"]

log = logging.getLogger("rankwise.serving")


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a model directory (it does not exist)")
    if not (path / SERVING_JSON).is_file() and not (path / RANKWISE_JSON).is_file():
        raise ModelDirError(f"{path}: neither {SERVING_JSON} (ONNX export) nor {RANKWISE_JSON} (PyTorch model) found")


class Reranker(Ranker):
    """A reranker loaded from a directory, safe to share across threads.

    ONNX directories run through :class:`~serving.onnx_ranker.OnnxRanker` (sessions run
    concurrently); PyTorch directories load the ranker class of their kind and serialise calls
    with a lock (PyTorch already uses every core inside one forward pass).

    Args:
        ranker: the underlying :class:`~rankers.base.Ranker`.
        kind: the model kind (``rankwise.json``/``serving.json``).
        backend: ``"onnx"`` or ``"pytorch"``.

    Example:
        >>> rr = Reranker.load("runs/ce-minilm-onnx")  # doctest: +SKIP
        >>> [(h.docid, round(h.score, 2)) for h in rr.rerank("what is bm25", ["a ranking function", "a fish"])]  # doctest: +SKIP
        [('0', 3.1), ('1', -7.4)]
    """

    def __init__(self, ranker: Ranker, kind: str, backend: str) -> None:
        self._ranker = ranker
        self.kind = kind
        self.backend = backend
        self._lock = threading.Lock() if backend == "pytorch" else None

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: Device = "auto",
        threads: int | None = None,
        batch_size: int = 32,
        runtime: Runtime = "auto",
    ) -> Reranker:
        """Load a PyTorch model directory or an ONNX export directory.

        Args:
            directory: the model directory.
            device: ``"auto"``, ``"cuda"`` or ``"cpu"``.
            threads: intra-op threads (onnxruntime) or ``torch.set_num_threads`` (PyTorch).
            batch_size: pairs per forward pass.
            runtime: for an export directory, ``"auto"`` (the runtime it was exported for;
                onnxruntime on CUDA), ``"onnxruntime"`` or ``"openvino"``.
        """
        directory = Path(directory)
        _check_dir(directory)
        if (directory / SERVING_JSON).is_file():
            from rankwise.serving.onnx_ranker import OnnxRanker

            meta = read_serving_json(directory)
            if meta.get("task") != "pair-score":
                raise ModelDirError(f"{directory / SERVING_JSON}: kind {meta['kind']!r} is not a reranker (use Recommender.load)")
            return cls(OnnxRanker(directory, device=device, threads=threads, batch_size=batch_size, runtime=runtime), meta["kind"], "onnx")
        meta = read_rankwise_json(directory)
        kind = meta["kind"]
        if kind in RECOMMENDER_CLASSES:
            raise ModelDirError(f"{directory / RANKWISE_JSON}: kind {kind!r} is a recommender (use Recommender.load)")
        if runtime != "auto":
            raise ValueError(f"{directory}: runtime={runtime!r} chooses an export's engine; this is a PyTorch directory "
                             "(rankwise export it first)")
        rankers = ranker_classes()
        if kind not in rankers:
            raise ModelDirError(f"{directory / RANKWISE_JSON}: kind {kind!r} is not a known reranker ({sorted(rankers)})")
        import torch

        if threads:
            torch.set_num_threads(threads)
        ranker = load_class(rankers[kind]).from_pretrained(directory)
        if hasattr(ranker, "batch_size"):
            ranker.batch_size = batch_size
        if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
            if torch.cuda.is_available():
                ranker.model.to("cuda")
            else:
                log.warning("rankwise: CUDA is not available to PyTorch; running on CPU")
        return cls(ranker, kind, "pytorch")

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("rerank: query is empty")
        bad = [i for i, d in enumerate(docs) if not isinstance(d, str)]
        if bad:
            raise TypeError(f"rerank: docs[{bad[0]}] is {type(docs[bad[0]]).__name__}, expected str")
        if not docs:
            return np.zeros(0)
        if self._lock is None:
            return self._ranker.score(query, docs)
        with self._lock:
            return self._ranker.score(query, docs)

    def rerank(
        self,
        query: str,
        docs: Sequence[str],
        top_k: int | None = None,
        docids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Rank ``docs`` for ``query``; returns at most ``top_k`` hits, best first (ids default to positions)."""
        if top_k is not None and top_k < 1:
            raise ValueError(f"rerank: top_k must be >= 1, got {top_k}")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("rerank: query is empty")
        return super().rerank(query, docs, top_k=top_k, docids=docids)


@dataclass(frozen=True)
class ItemHit:
    """One recommended item: its dataset id, score and 1-based rank."""

    item_id: str
    score: float
    rank: int


class Recommender:
    """Next-item recommendation from a history of item ids: user tower + faiss over item vectors.

    The user tower encodes the (last ``max_len``) history into one vector, or several for
    multi-interest models (an item's score is then its best match); a faiss ``IndexFlatIP`` over
    the cached item vectors (L2-normalised when the model scores by cosine) returns the top items.

    Args:
        encode: ``item_seq (B, L) int64 -> (B, D) or (B, M, D)`` float32, thread-safe.
        item_vectors: ``(n_items, D)`` vectors of item indices ``1..n_items``.
        item_ids: dataset id of each item index ``1..n_items``.
        similarity: ``"cosine"`` or ``"dot"``.
        max_len: histories are cut to their last ``max_len`` items.
        kind: model kind; backend: ``"onnx"`` or ``"pytorch"``.

    Example:
        >>> rec = Recommender.load("runs/sasrec-ml1m")  # doctest: +SKIP
        >>> [h.item_id for h in rec.recommend(["1193", "661", "914"], k=3)]  # doctest: +SKIP
        ['2355', '1197', '1287']
    """

    def __init__(
        self,
        encode: Any,
        item_vectors: np.ndarray,
        item_ids: Sequence[str],
        similarity: str,
        max_len: int,
        kind: str,
        backend: str,
    ) -> None:
        import faiss

        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if len(vectors) != len(item_ids):
            raise ValueError(f"Recommender: {len(vectors)} item vectors but {len(item_ids)} item ids")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"Recommender: similarity must be 'cosine' or 'dot', got {similarity!r}")
        if similarity == "cosine":
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._encode = encode
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)
        self.item_ids = [str(i) for i in item_ids]
        self._index_of = {iid: i + 1 for i, iid in enumerate(self.item_ids)}
        self.similarity = similarity
        self.max_len = max_len
        self.kind = kind
        self.backend = backend

    @classmethod
    def load(
        cls, directory: str | Path, device: Device = "auto", threads: int | None = None, trust_remote_code: bool = False
    ) -> Recommender:
        """Load a recommender model directory (PyTorch) or its ONNX export.

        ``trust_remote_code`` (off by default) lets transformers run code shipped in a PyTorch
        directory (HLLM's LLMs); a field in the directory cannot turn it on.
        """
        directory = Path(directory)
        _check_dir(directory)
        if (directory / SERVING_JSON).is_file():
            from rankwise.serving.runtime import OnnxSession

            meta = read_serving_json(directory)
            if meta.get("task") != "user-tower":
                raise ModelDirError(f"{directory / SERVING_JSON}: kind {meta['kind']!r} is not a recommender (use Reranker.load)")
            vec_path = directory / meta["item_vectors"]
            try:
                vectors = np.load(vec_path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ModelDirError(f"{vec_path}: cannot read item vectors ({err})") from None
            session = OnnxSession(directory / meta["onnx_file"], device=device, intra_op_threads=threads)
            return cls(lambda seq: session.run({"item_seq": seq}), vectors, meta["item_ids"],
                       meta["similarity"], int(meta["max_len"]), meta["kind"], "onnx")
        meta = read_rankwise_json(directory)
        kind = meta["kind"]
        if kind in ranker_classes():
            raise ModelDirError(f"{directory / RANKWISE_JSON}: kind {kind!r} is a reranker (use Reranker.load)")
        if kind not in RECOMMENDER_CLASSES:
            raise ModelDirError(f"{directory / RANKWISE_JSON}: kind {kind!r} is not a known recommender ({sorted(RECOMMENDER_CLASSES)})")
        import torch

        if threads:
            torch.set_num_threads(threads)
        model = load_class(RECOMMENDER_CLASSES[kind]).from_pretrained(directory, trust_remote_code=trust_remote_code).eval()
        if not model.item_ids:
            raise ModelDirError(f"{directory / RANKWISE_JSON}: field 'item_ids' is missing (the item-id mapping)")
        lock = threading.Lock()

        def encode(seq: np.ndarray) -> np.ndarray:
            with lock, torch.inference_mode():
                return model.encode_users(torch.from_numpy(seq)).float().numpy()

        with torch.inference_mode():
            vectors = model.item_embeddings()[1:].float().numpy()  # (n_items, D)
        return cls(encode, vectors, model.item_ids, model.config.similarity, model.config.max_len, kind, "pytorch")

    def _indices(self, history: Sequence[str | int]) -> tuple[list[int], set[int], list[str], int]:
        """Item indices of the known history items (the last ``max_len``), the set of all of them, the
        unknown ids skipped and the history's known length before the cut."""
        if isinstance(history, str) or not len(history):
            raise ValueError("recommend: history must be a non-empty list of item ids")
        known = [self._index_of[str(i)] for i in history if str(i) in self._index_of]
        unknown = [str(i) for i in history if str(i) not in self._index_of]
        if not known:
            raise ValueError("recommend: history has no item known to the model")
        return known[-self.max_len:], set(known), unknown, len(known)

    def recommend(self, history: Sequence[str | int], k: int = 10, exclude_seen: bool = True) -> list[ItemHit]:
        """Top-``k`` items after ``history`` (oldest first), excluding the history when asked.

        Shapes: ``history``: ``(L,)`` dataset item ids; returns ``k`` hits (fewer only when the
        catalogue is smaller).
        """
        return self.recommend_many([history], k, exclude_seen)[0]

    def recommend_many(
        self, histories: Sequence[Sequence[str | int]], k: int = 10, exclude_seen: bool = True
    ) -> list[list[ItemHit]]:
        """:meth:`recommend` for several users in one user-tower call and one faiss search.

        Histories are left-padded with 0 to the longest (at most ``max_len``), as in training.

        Shapes: ``histories``: ``B`` lists of dataset item ids; returns ``B`` lists of ``k`` hits.
        """
        if k < 1:
            raise ValueError(f"recommend: k must be >= 1, got {k}")
        if not len(histories):
            return []
        parsed = [self._indices(h) for h in histories]
        unknown = [u for _, _, skipped, _ in parsed for u in skipped]
        if unknown:
            log.warning("rankwise: %d history items are unknown to the model and skipped (e.g. %r)", len(unknown), unknown[0])
        cut = [n for _, _, _, n in parsed if n > self.max_len]
        if cut:
            log.warning("rankwise: %d of %d histories (up to %d items) cut to the last %d (max_len)",
                        len(cut), len(parsed), max(cut), self.max_len)
        rows = [(known, seen) for known, seen, _, _ in parsed]
        width = max(len(known) for known, _ in rows)
        seq = np.zeros((len(rows), width), dtype=np.int64)  # (B, L), left-padded
        for b, (known, _) in enumerate(rows):
            seq[b, width - len(known):] = known
        users = np.asarray(self._encode(seq), dtype=np.float32)
        per_user = users.shape[1] if users.ndim == 3 else 1  # M vectors per user (multi-interest) or one
        users = users.reshape(-1, users.shape[-1])  # (B * M, D)
        if self.similarity == "cosine":
            users = users / np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
        longest_seen = max(len(seen) for _, seen in rows) if exclude_seen else 0
        want = min(k + longest_seen, self._index.ntotal)
        scores, idx = self._index.search(np.ascontiguousarray(users), want)  # (B * M, want)
        out = []
        for b, (_, seen) in enumerate(rows):
            best: dict[int, float] = {}
            for row_s, row_i in zip(scores[b * per_user:(b + 1) * per_user], idx[b * per_user:(b + 1) * per_user]):
                for s, i in zip(row_s.tolist(), row_i.tolist()):
                    item = i + 1
                    if i < 0 or (exclude_seen and item in seen):
                        continue
                    if s > best.get(item, -np.inf):
                        best[item] = s
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            out.append([ItemHit(self.item_ids[item - 1], float(s), r + 1) for r, (item, s) in enumerate(ranked)])
        return out
