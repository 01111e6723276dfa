"""Listwise LLM ranker: numbered passages in, a permutation ``[3] > [1] > ...`` out."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Hit, Ranker
from rankwise.rankers.llm import LLMRanker, chat_prompt, generate, truncate_text

__all__ = [
    "ListwiseRanker", "ListwiseStats", "ParsedPermutation", "listwise_prompt", "parse_answer", "parse_permutation",
    "sliding_windows",
]

SYSTEM = "You are a search engine that ranks passages by their relevance to a query."


ANSWER_FORMATS = {
    "arrows": "Answer only with the identifiers, e.g. [2] > [1] > [3].",
    "lines": "Answer with one identifier per line, e.g.\n[2]\n[1]\n[3]",
}


def listwise_prompt(
    tokenizer: PreTrainedTokenizerBase, query: str, docs: Sequence[str], answer: Literal["arrows", "lines"] = "arrows"
) -> str:
    """RankGPT-style prompt: the query, passages numbered ``[1]..[n]``, then the answer format.

    ``answer="arrows"`` asks for ``[2] > [1] > [3]``; ``"lines"`` for one id per line (Rank-GRPO's unit).
    """
    passages = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs))
    user = (
        f"Query: {query}\n{passages}\nRank the {len(docs)} passages above by relevance to the query, most "
        f"relevant first. {ANSWER_FORMATS[answer]}"
    )
    return chat_prompt(tokenizer, user, system=SYSTEM)


@dataclass(frozen=True)
class ParsedPermutation:
    """What :func:`parse_answer` read from one generated answer.

    Args:
        order: 0-based order of all ``n`` passages (repaired: passages never named appended in input order).
        named: how many distinct valid ids the answer named.
        failed: the answer named no valid id (unparseable; ``order`` is the input order).
        partial: some but not all passages were named (``order`` was completed).
        echo: the answer named at least one id and ``order`` equals the input order.
    """

    order: list[int]
    named: int
    failed: bool
    partial: bool
    echo: bool


def parse_answer(text: str, n: int) -> ParsedPermutation:
    """Parse a generated permutation and say whether it failed, was incomplete or echoed the input.

    Every integer in the text is read as a 1-based passage id; ids out of range and repeats are
    dropped; passages never named are appended in their input order (and counted as ``partial``).

    Example:
        >>> parse_answer("[3] > [1] > [3] > [9]", 4)
        ParsedPermutation(order=[2, 0, 1, 3], named=2, failed=False, partial=True, echo=False)
        >>> parse_answer("no idea", 3).failed, parse_answer("[1] > [2] > [3]", 3).echo
        (True, True)
    """
    named: list[int] = []
    for token in re.findall(r"\d+", text):
        i = int(token) - 1
        if 0 <= i < n and i not in named:
            named.append(i)
    order = named + [i for i in range(n) if i not in named]
    failed = not named and n > 0
    return ParsedPermutation(
        order=order, named=len(named), failed=failed, partial=0 < len(named) < n,
        echo=bool(named) and order == list(range(n)),
    )


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based order of ``n`` passages from a generated answer (``parse_answer(text, n).order``).

    Use :func:`parse_answer` to tell a repaired or echoed answer from a real permutation.

    Example:
        >>> parse_permutation("[3] > [1] > [3] > [9]", 4)
        [2, 0, 1, 3]
        >>> parse_permutation("no idea", 3)
        [0, 1, 2]
    """
    return parse_answer(text, n).order


@dataclass(frozen=True)
class ListwiseStats:
    """Counts over every window a :class:`ListwiseRanker` generated for (one per prompt).

    Args:
        calls: windows generated.
        parse_failures: answers naming no valid id (the window kept its input order).
        echoes: answers whose parsed order is the input order.
        partial: answers naming only some of the window's passages (completed in input order).
    """

    calls: int = 0
    parse_failures: int = 0
    echoes: int = 0
    partial: int = 0

    def rates(self) -> dict[str, float]:
        """``{"parse_failure_rate", "echo_rate", "partial_rate"}`` as fractions of ``calls`` (0 if none)."""
        c = max(self.calls, 1)
        return {
            "parse_failure_rate": self.parse_failures / c, "echo_rate": self.echoes / c, "partial_rate": self.partial / c,
        }


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Back-to-front windows ``[start, end)`` over ``n`` items (RankGPT's order).

    The last window ends at ``n``; each next one starts ``stride`` earlier, until one starts at 0,
    so the best items bubble up to the top.

    Example:
        >>> sliding_windows(20, 8, 4)
        [(12, 20), (8, 16), (4, 12), (0, 8)]
        >>> sliding_windows(5, 8, 4)
        [(0, 5)]
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"sliding_windows: window and stride must be positive, got {window}, {stride}")
    spans, end = [], n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


class ListwiseRanker(LLMRanker, Ranker):
    """Listwise permutation ranker with a sliding window (or one pass when ``window >= n``).

    Formula:
        For each window (back to front), order ← parse(generate(prompt(window))); the window's
        slice of the running order is replaced by that permutation. Final score of the item at
        position r (1-based) is ``n − r + 1``.

    Paper:
        Is ChatGPT Good at Search? (RankGPT; Sun et al., 2023), https://arxiv.org/abs/2304.09542.
        Fine-tuning with LiPO (Liu et al., 2024), https://arxiv.org/abs/2402.01878 (see
        ``train/cli_llm.py listwise``). Differences from the paper: greedy decoding only; the parse
        repairs any output (repeats dropped, missing ids appended in input order), and every repair
        is counted in :attr:`stats` (a failed or echoed answer leaves the first-stage order, which
        would otherwise pass for the model's own judgement).

    Args:
        model, tokenizer: a causal LM.
        window: passages per prompt (``>= n`` ranks everything in one pass).
        stride: step between windows.
        max_doc_tokens: each passage is cut to this many tokens.
        max_new_tokens: generation budget per window (``None``: 6 tokens per passage).
        answer: answer format asked for: ``"arrows"`` or ``"lines"`` (models trained with Rank-GRPO).
        log_generations: a JSONL file that gets one line per window: ``qid`` (or ``query``), the
            prompt's candidate ids in prompt order, the raw ``answer``, the parsed ``order`` (as
            candidate ids) and the ``failed`` / ``partial`` / ``echo`` flags. Appended to, not saved
            with the model.
        device, dtype: see :class:`rankers.llm.LLMRanker`.

    Shapes:
        ``score(query, docs)``: ``(len(docs),)``, descending with the final position.

    Example:
        >>> ranker = ListwiseRanker.from_pretrained("models/smollm2", window=8, stride=4)  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a fish", "a ranking function"])  # doctest: +SKIP
        >>> ranker.stats.rates()  # doctest: +SKIP
        {'parse_failure_rate': 0.0, 'echo_rate': 1.0, 'partial_rate': 0.0}
    """

    KIND = "listwise"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        window: int = 20,
        stride: int = 10,
        max_doc_tokens: int = 100,
        max_new_tokens: int | None = None,
        answer: Literal["arrows", "lines"] = "arrows",
        log_generations: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(model, tokenizer, device=device, dtype=dtype)
        if answer not in ANSWER_FORMATS:
            raise ValueError(f"ListwiseRanker: answer must be one of {list(ANSWER_FORMATS)}, got {answer!r}")
        self.answer = answer
        sliding_windows(1, window, stride)  # validates
        self.window = window
        self.stride = stride
        self.max_doc_tokens = max_doc_tokens
        self.max_new_tokens = max_new_tokens
        self.log_generations = Path(log_generations) if log_generations is not None else None
        if self.log_generations is not None:
            self.log_generations.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stats = ListwiseStats()

    def _settings(self) -> dict:
        return {
            "window": self.window, "stride": self.stride,
            "max_doc_tokens": self.max_doc_tokens, "max_new_tokens": self.max_new_tokens, "answer": self.answer,
        }

    @property
    def stats(self) -> ListwiseStats:
        """Counts of windows, parse failures, echoes and partial answers since construction."""
        with self._lock:
            return self._stats

    def _record(self, parsed: ParsedPermutation, text: str, ids: Sequence[str], qid: str | None, query: str) -> None:
        with self._lock:
            s = self._stats
            self._stats = ListwiseStats(
                s.calls + 1, s.parse_failures + parsed.failed, s.echoes + parsed.echo, s.partial + parsed.partial
            )
            if self.log_generations is None:
                return
            line = {
                **({"qid": qid} if qid is not None else {"query": query}),
                "candidates": list(ids), "answer": text, "order": [ids[i] for i in parsed.order],
                "failed": parsed.failed, "partial": parsed.partial, "echo": parsed.echo,
            }
            with self.log_generations.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def rank_window(
        self, query: str, docs: Sequence[str], docids: Sequence[str] | None = None, qid: str | None = None
    ) -> list[int]:
        """One generation: 0-based order of ``docs`` (already truncated); counted in :attr:`stats`.

        ``docids`` and ``qid`` only label the :attr:`log_generations` line (default: positions).
        """
        budget = self.max_new_tokens or 6 * len(docs)
        text = generate(self.model, self.tokenizer, [listwise_prompt(self.tokenizer, query, docs, self.answer)], budget)[0]
        parsed = parse_answer(text, len(docs))
        self._record(parsed, text, [str(i) for i in range(len(docs))] if docids is None else docids, qid, query)
        return parsed.order

    def order(
        self, query: str, docs: Sequence[str], docids: Sequence[str] | None = None, qid: str | None = None
    ) -> list[int]:
        """0-based final order of ``docs`` after all windows."""
        ids = [str(i) for i in range(len(docs))] if docids is None else list(docids)
        docs = [truncate_text(self.tokenizer, d, self.max_doc_tokens) for d in docs]
        order = list(range(len(docs)))
        for start, end in sliding_windows(len(docs), self.window, self.stride):
            span = order[start:end]
            perm = self.rank_window(query, [docs[i] for i in span], [ids[i] for i in span], qid)
            order[start:end] = [span[p] for p in perm]
        return order

    def _scores(self, order: list[int]) -> np.ndarray:
        scores = np.zeros(len(order))
        for r, i in enumerate(order):
            scores[i] = len(order) - r
        return scores

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Scores ``n − position`` so that sorting by score gives the generated order."""
        return self._scores(self.order(query, docs))

    def rerank(
        self, query: str, docs: Sequence[str], top_k: int | None = None, docids: Sequence[str] | None = None,
        qid: str | None = None,
    ) -> list[Hit]:
        """Order ``docs``; ``docids`` / ``qid`` also label the :attr:`log_generations` lines."""
        if not docs:
            return []
        ids = list(docids) if docids is not None else [str(i) for i in range(len(docs))]
        if len(ids) != len(docs):
            raise ValueError(f"rerank: {len(docs)} docs but {len(ids)} docids")
        order = self.order(query, docs, ids, qid)[: top_k or None]
        return [Hit(ids[i], float(len(docs) - r), r + 1) for r, i in enumerate(order)]

    def _rerank_query(self, qid: str, query: str, docs: list[str], ids: list[str]) -> list[Hit]:
        """The query id labels the logged generations."""
        return self.rerank(query, docs, docids=ids, qid=qid)
