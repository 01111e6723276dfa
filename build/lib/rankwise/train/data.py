"""Training lists for rerankers: (query, positives, BM25 hard negatives, graded labels), streamed.

Each :class:`TrainingList` holds one query, its judged-relevant documents and hard negatives drawn
from a first-stage run (BM25 top-``k`` minus the relevant ones), with the first-stage rank and score
of every candidate (the evidence curriculum weighting reads). :class:`HardNegativeLists` is an
iterable that retrieves and samples lazily, one query at a time, in an order fixed by the seed, so
two runs with the same seed see the same lists and a resumed run can skip what it has seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from rankwise.rankers.base import Hit

__all__ = ["TrainingList", "ListBatch", "HardNegativeLists", "collate_lists"]


@dataclass(frozen=True)
class TrainingList:
    """One query's candidate list. Candidates absent from the first stage get rank ``k + 1`` and
    the lowest first-stage score of the list."""

    qid: str
    query: str
    docids: tuple[str, ...]
    docs: tuple[str, ...]
    labels: tuple[float, ...]
    first_stage_ranks: tuple[int, ...]
    first_stage_scores: tuple[float, ...]


@dataclass
class ListBatch:
    """A padded batch of lists.

    Shapes: ``labels, mask, first_stage_ranks, first_stage_scores: (B, L)``; ``docs[b]`` has
    ``mask[b].sum()`` texts.
    """

    queries: list[str]
    docs: list[list[str]]
    labels: torch.Tensor
    mask: torch.Tensor
    first_stage_ranks: torch.Tensor
    first_stage_scores: torch.Tensor


def collate_lists(lists: Sequence[TrainingList]) -> ListBatch:
    """Pad lists to the longest one (padding: label 0, mask False)."""
    width = max(len(t.docs) for t in lists)

    def pad(values: Sequence[float], fill: float) -> list[float]:
        return list(values) + [fill] * (width - len(values))

    return ListBatch(
        queries=[t.query for t in lists],
        docs=[list(t.docs) for t in lists],
        labels=torch.tensor([pad(t.labels, 0.0) for t in lists], dtype=torch.float32),
        mask=torch.tensor([[True] * len(t.docs) + [False] * (width - len(t.docs)) for t in lists]),
        first_stage_ranks=torch.tensor([pad(t.first_stage_ranks, 0) for t in lists], dtype=torch.long),
        first_stage_scores=torch.tensor([pad(t.first_stage_scores, 0.0) for t in lists], dtype=torch.float32),
    )


class HardNegativeLists:
    """Stream of training lists with BM25 hard negatives, deterministic for a seed.

    Args:
        queries: ``qid -> query text`` (only these are used; pass a subset to hold queries out).
        qrels: ``qid -> {docid: grade}``; grades > 0 are positives, everything else is label 0.
        doc_text: ``docid -> text`` (mapping or function).
        search: ``(query, k) -> list[Hit]`` first stage (e.g. ``BM25Retriever.search``).
        list_size: candidates per list (positives first, then sampled negatives).
        max_positives: at most this many positives per list (sampled when there are more).
        negatives_from: sample negatives from the first stage's top ``negatives_from``.
        hardest: take the top-ranked non-relevant candidates instead of sampling them.
        epochs: passes over the queries (``None``: forever); each epoch reshuffles with the seed.
        seed: fixes query order and negative sampling.

    Example:
        >>> lists = HardNegativeLists({"q": "a"}, {"q": {"d1": 1}}, {"d1": "x", "d2": "y"},
        ...     lambda q, k: [Hit("d2", 3.0, 1), Hit("d1", 2.0, 2)], list_size=2, epochs=1)
        >>> [(t.docids, t.labels, t.first_stage_ranks) for t in lists]
        [(('d2', 'd1'), (0.0, 1.0), (1, 2))]
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        doc_text: Mapping[str, str] | Callable[[str], str],
        search: Callable[[str, int], list[Hit]],
        list_size: int = 16,
        max_positives: int = 4,
        negatives_from: int = 100,
        hardest: bool = False,
        epochs: int | None = 1,
        seed: int = 0,
    ) -> None:
        if list_size < 2:
            raise ValueError(f"HardNegativeLists: list_size must be >= 2, got {list_size}")
        if max_positives < 1:
            raise ValueError(f"HardNegativeLists: max_positives must be >= 1, got {max_positives}")
        self.qids = sorted(q for q in queries if any(g > 0 for g in qrels.get(q, {}).values()))
        if not self.qids:
            raise ValueError("HardNegativeLists: no query has a relevant document in qrels")
        self.queries, self.qrels, self.search = queries, qrels, search
        self.doc_text = doc_text.__getitem__ if isinstance(doc_text, Mapping) else doc_text
        self.list_size, self.max_positives = list_size, min(max_positives, list_size - 1)
        self.negatives_from, self.hardest, self.epochs, self.seed = negatives_from, hardest, epochs, seed
        self._hits: dict[str, list[Hit]] = {}  # first-stage results are small (k ids per query) and reused each epoch

    def __len__(self) -> int:
        """Lists per epoch."""
        return len(self.qids)

    def _first_stage(self, qid: str) -> list[Hit]:
        if qid not in self._hits:
            self._hits[qid] = self.search(self.queries[qid], self.negatives_from)
        return self._hits[qid]

    def make_list(self, qid: str, rng: random.Random) -> TrainingList:
        """Build one list for ``qid`` with ``rng`` (positives, then negatives, in a shuffled order)."""
        judged = self.qrels.get(qid, {})
        hits = self._first_stage(qid)
        rank = {h.docid: h.rank for h in hits}
        score = {h.docid: h.score for h in hits}
        floor = min(score.values()) if score else 0.0
        positives = sorted(d for d, g in judged.items() if g > 0)
        if len(positives) > self.max_positives:
            positives = rng.sample(positives, self.max_positives)
        pool = [h.docid for h in hits if judged.get(h.docid, 0) <= 0]
        n_neg = min(self.list_size - len(positives), len(pool))
        negatives = pool[:n_neg] if self.hardest else rng.sample(pool, n_neg)
        docids = positives + negatives
        rng.shuffle(docids)
        return TrainingList(
            qid=qid,
            query=self.queries[qid],
            docids=tuple(docids),
            docs=tuple(self.doc_text(d) for d in docids),
            labels=tuple(float(max(judged.get(d, 0), 0)) for d in docids),
            first_stage_ranks=tuple(rank.get(d, self.negatives_from + 1) for d in docids),
            first_stage_scores=tuple(score.get(d, floor) for d in docids),
        )

    def __iter__(self) -> Iterator[TrainingList]:
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = list(self.qids)
            random.Random(f"{self.seed}-order-{epoch}").shuffle(order)
            for qid in order:
                yield self.make_list(qid, random.Random(f"{self.seed}-{epoch}-{qid}"))
            epoch += 1
