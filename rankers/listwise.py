"""Listwise LLM ranker: numbered passages in, a permutation ``[3] > [1] > ...`` out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Ranker
from rankwise.rankers.llm import LLMRanker, chat_prompt, generate, truncate_text

__all__ = ["ListwiseRanker", "listwise_prompt", "parse_permutation", "sliding_windows"]

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


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based order of ``n`` passages from a generated answer.

    Every integer in the text is read as a 1-based passage id; ids out of range and repeats are
    dropped; passages never named are appended in their input order.

    Example:
        >>> parse_permutation("[3] > [1] > [3] > [9]", 4)
        [2, 0, 1, 3]
        >>> parse_permutation("no idea", 3)
        [0, 1, 2]
    """
    order: list[int] = []
    for token in re.findall(r"\d+", text):
        i = int(token) - 1
        if 0 <= i < n and i not in order:
            order.append(i)
    return order + [i for i in range(n) if i not in order]


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
        repairs any output (repeats dropped, missing ids appended in input order).

    Args:
        model, tokenizer: a causal LM.
        window: passages per prompt (``>= n`` ranks everything in one pass).
        stride: step between windows.
        max_doc_tokens: each passage is cut to this many tokens.
        max_new_tokens: generation budget per window (``None``: 6 tokens per passage).
        answer: answer format asked for: ``"arrows"`` or ``"lines"`` (models trained with Rank-GRPO).

    Shapes:
        ``score(query, docs)``: ``(len(docs),)``, descending with the final position.

    Example:
        >>> ranker = ListwiseRanker.from_pretrained("models/smollm2", window=8, stride=4)  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a fish", "a ranking function"])  # doctest: +SKIP
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
    ) -> None:
        super().__init__(model, tokenizer)
        if answer not in ANSWER_FORMATS:
            raise ValueError(f"ListwiseRanker: answer must be one of {list(ANSWER_FORMATS)}, got {answer!r}")
        self.answer = answer
        sliding_windows(1, window, stride)  # validates
        self.window = window
        self.stride = stride
        self.max_doc_tokens = max_doc_tokens
        self.max_new_tokens = max_new_tokens

    def _settings(self) -> dict:
        return {
            "window": self.window, "stride": self.stride,
            "max_doc_tokens": self.max_doc_tokens, "max_new_tokens": self.max_new_tokens, "answer": self.answer,
        }

    def rank_window(self, query: str, docs: Sequence[str]) -> list[int]:
        """One generation: 0-based order of ``docs`` (already truncated)."""
        budget = self.max_new_tokens or 6 * len(docs)
        text = generate(self.model, self.tokenizer, [listwise_prompt(self.tokenizer, query, docs, self.answer)], budget)[0]
        return parse_permutation(text, len(docs))

    def order(self, query: str, docs: Sequence[str]) -> list[int]:
        """0-based final order of ``docs`` after all windows."""
        docs = [truncate_text(self.tokenizer, d, self.max_doc_tokens) for d in docs]
        order = list(range(len(docs)))
        for start, end in sliding_windows(len(docs), self.window, self.stride):
            span = order[start:end]
            perm = self.rank_window(query, [docs[i] for i in span])
            order[start:end] = [span[p] for p in perm]
        return order

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Scores ``n − position`` so that sorting by score gives the generated order."""
        scores = np.zeros(len(docs))
        for r, i in enumerate(self.order(query, docs)):
            scores[i] = len(docs) - r
        return scores
