"""ERank: a pointwise LLM ranker that reads a relevance integer 0–10 from the next-token distribution."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Ranker
from rankwise.rankers.llm import LLMRanker, chat_prompt, generate, next_token_logprobs, single_token_id, truncate_text

__all__ = ["ERankRanker", "ERankReadout", "ERankStats", "erank_prompt", "parse_score", "expected_score"]

SYSTEM = "You are a search relevance judge."
INTEGER_TASK = (
    "How relevant is the document to the query? Answer with one integer from 0 (irrelevant) "
    "to 10 (perfectly relevant)."
)
REASONING_TASK = (
    "How relevant is the document to the query? Think step by step in a few sentences, then end "
    "with 'Score: N' where N is an integer from 0 (irrelevant) to 10 (perfectly relevant)."
)
YES_NO_TASK = "Is the document relevant to the query? Answer yes or no."


def erank_prompt(
    tokenizer: PreTrainedTokenizerBase,
    query: str,
    doc: str,
    readout: Literal["integer", "yes_no", "reasoning"] = "integer",
) -> str:
    """The chat prompt for one (query, document) pair; the answer starts right after it."""
    task = {"integer": INTEGER_TASK, "yes_no": YES_NO_TASK, "reasoning": REASONING_TASK}[readout]
    return chat_prompt(tokenizer, f"Query: {query}\nDocument: {doc}\n{task}", system=SYSTEM)


_SCORE = re.compile(r"(?:score\s*[:=]\s*)?(10|\d)(?!\d)", re.IGNORECASE)


def parse_score(text: str) -> int | None:
    """The relevance integer in a completion: after the last "Score:" if present, else the first 0–10.

    Example:
        >>> parse_score("7"), parse_score(" 10\\n"), parse_score("It matches. Score: 9"), parse_score("none")
        (7, 10, 9, None)
    """
    tagged = re.findall(r"score\s*[:=]\s*(\d+)", text, re.IGNORECASE)
    if tagged:
        value = int(tagged[-1])
        return value if 0 <= value <= 10 else None
    match = _SCORE.search(text)
    return int(match.group(1)) if match else None


def expected_score(first: torch.Tensor, after_one: torch.Tensor) -> torch.Tensor:
    """Expected integer 0–10 from the first digit's and the following digit's distributions.

    Formula:
        p_k = P(first token = "k"), q = P("0" | "1");  P(1) = p_1 (1 − q), P(10) = p_1 q
        score = (Σ_{k≠1} k p_k + p_1 (1 − q) + 10 p_1 q) / Σ_k p_k

    Args:
        first: log-probabilities of the digits "0".."9" at the answer's first position.
        after_one: log-probabilities of "0".."9" after a "1" (only its "0" entry is used).

    Shapes:
        first: ``(N, 10)``; after_one: ``(N, 10)``; returns ``(N,)`` in [0, 10].

    Example:
        >>> import math
        >>> first = torch.full((1, 10), -1e9); first[0, 1] = 0.0   # certainly starts with "1"
        >>> after = torch.full((1, 10), math.log(0.5))               # P("0" | "1") = 0.5
        >>> float(expected_score(first, after))                      # half "1", half "10"
        5.5
    """
    p = first.exp()  # (N, 10)
    q = after_one[:, 0].exp()  # (N,)
    values = torch.arange(10, dtype=p.dtype)
    mass = p.sum(-1).clamp_min(1e-12)
    other = (p * values).sum(-1) - p[:, 1]  # Σ_{k≠1} k p_k
    return (other + p[:, 1] * (1 - q) + 10 * p[:, 1] * q) / mass


@dataclass(frozen=True)
class ERankReadout:
    """Scores of one :meth:`ERankRanker.score_readout` call, with how much the model meant to answer a digit.

    Args:
        scores: relevance per document.
        digit_mass: integer readout only (else ``None``): Σ_{k=0..9} P(first answer token = "k"),
            the softmax over the *full* vocabulary at the answer's first position. Near 1: the model
            answers with a number; near 0: the expected score is read from a distribution the model
            barely puts mass on, and the ranking is mostly noise.

    Shapes:
        scores: ``(N,)``; digit_mass: ``(N,)`` in [0, 1].
    """

    scores: np.ndarray
    digit_mass: np.ndarray | None


@dataclass(frozen=True)
class ERankStats:
    """Counts over every pair an :class:`ERankRanker` scored (what a benchmark row reports).

    Args:
        pairs: (query, document) pairs scored.
        digit_pairs: pairs scored with the integer readout (the ones with a digit mass).
        digit_mass_sum: Σ digit mass over those pairs.
    """

    pairs: int = 0
    digit_pairs: int = 0
    digit_mass_sum: float = 0.0

    @property
    def mean_digit_mass(self) -> float:
        """Mean probability mass on the digit tokens (NaN when no pair used the integer readout)."""
        return self.digit_mass_sum / self.digit_pairs if self.digit_pairs else math.nan


class ERankRanker(LLMRanker, Ranker):
    """Pointwise LLM ranker: (query, document) → relevance integer 0–10, read as an expectation.

    Formula:
        integer: score = E[k] over the 11 answers 0..10 (see :func:`expected_score`; one pass,
        "10" read from a second position after an appended "1").
        yes_no: score = P(yes) / (P(yes) + P(no)) (summed over "yes"/"Yes" and "no"/"No").
        reasoning: generate, then :func:`parse_score` (0 when no integer is found).

    Paper:
        ERank: Fusing Supervised Fine-Tuning and Reinforcement Learning for Effective and Efficient
        Text Reranking (Cai et al., 2025), https://arxiv.org/abs/2509.00520.
        Differences from the paper: the expected-value readout over the integer tokens is ours (the
        paper generates after reasoning); "10" is two tokens in common tokenizers, so its probability
        is p("1")·p("0" | "1") from one extra position of the same forward pass. The yes/no readout is
        ours too: small instruction models (SmolLM2-135M) rate 0–10 at chance zero-shot but answer
        yes/no well; the integer readout is what SFT (``train/sft.py``) teaches. The expectation is
        renormalised over the digits, so it hides how little mass a zero-shot model may put on them:
        :meth:`score_readout` returns that mass per pair and :attr:`stats` its mean.

    Args:
        model, tokenizer: a causal LM (see :mod:`rankers.llm`).
        readout: ``"integer"`` (default), ``"yes_no"`` or ``"reasoning"``.
        max_doc_tokens: documents are cut to this many tokens inside the prompt.
        batch_size: prompts per forward pass.
        max_new_tokens: generation budget in reasoning mode.
        device, dtype: see :class:`rankers.llm.LLMRanker`.

    Shapes:
        ``score(query, docs)``: ``(len(docs),)``.

    Example:
        >>> ranker = ERankRanker.from_pretrained("models/smollm2", readout="yes_no")  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a ranking function", "a fish"])  # doctest: +SKIP
    """

    KIND = "erank"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        readout: Literal["integer", "yes_no", "reasoning"] = "integer",
        max_doc_tokens: int = 200,
        batch_size: int = 8,
        max_new_tokens: int = 128,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(model, tokenizer, device=device, dtype=dtype)
        if readout not in ("integer", "yes_no", "reasoning"):
            raise ValueError(f"ERankRanker: readout must be integer, yes_no or reasoning, got {readout!r}")
        self.readout = readout
        self.max_doc_tokens = max_doc_tokens
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._digits = [single_token_id(tokenizer, str(k)) for k in range(10)]
        self._yes = self._word_ids(("yes", "Yes", " yes", " Yes"))
        self._no = self._word_ids(("no", "No", " no", " No"))
        self._lock = threading.Lock()
        self._stats = ERankStats()

    @property
    def stats(self) -> ERankStats:
        """Pairs scored and their mean digit mass since construction."""
        with self._lock:
            return self._stats

    def _word_ids(self, words: Sequence[str]) -> list[int]:
        ids = []
        for w in words:
            enc = self.tokenizer(w, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        return ids

    def _settings(self) -> dict:
        return {"readout": self.readout, "max_doc_tokens": self.max_doc_tokens, "max_new_tokens": self.max_new_tokens}

    def prompts(self, query: str, docs: Sequence[str]) -> list[str]:
        """One prompt per document (documents truncated to ``max_doc_tokens``)."""
        return [
            erank_prompt(self.tokenizer, query, truncate_text(self.tokenizer, d, self.max_doc_tokens), self.readout)
            for d in docs
        ]

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Relevance in [0, 10] (integer, reasoning) or [0, 1] (yes_no) for each document."""
        return self.score_readout(query, docs).scores

    def score_readout(self, query: str, docs: Sequence[str]) -> ERankReadout:
        """Scores and, for the integer readout, the digit mass of each pair; counted in :attr:`stats`."""
        if not docs:
            return ERankReadout(np.zeros(0), np.zeros(0) if self.readout == "integer" else None)
        prompts = self.prompts(query, docs)
        mass = None
        if self.readout == "reasoning":
            texts = generate(self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size)
            scores = np.array([float(parse_score(t) or 0) for t in texts])
        elif self.readout == "yes_no":
            logp = next_token_logprobs(self.model, self.tokenizer, prompts, 1, self.batch_size)[:, -1]  # (N, V)
            yes = torch.logsumexp(logp[:, self._yes], -1)
            no = torch.logsumexp(logp[:, self._no], -1)
            scores = torch.sigmoid(yes - no).numpy().astype(np.float64)
        else:
            logp = next_token_logprobs(
                self.model, self.tokenizer, prompts, keep=2, batch_size=self.batch_size, append_ids=[self._digits[1]]
            )  # (N, 2, V), log-softmax over the full vocabulary
            first = logp[:, 0, self._digits]  # (N, 10)
            scores = expected_score(first, logp[:, 1, self._digits]).numpy().astype(np.float64)
            mass = first.exp().sum(-1).clamp(0.0, 1.0).numpy().astype(np.float64)  # (N,)
        with self._lock:
            s = self._stats
            self._stats = ERankStats(
                s.pairs + len(docs),
                s.digit_pairs + (len(docs) if mass is not None else 0),
                s.digit_mass_sum + (float(mass.sum()) if mass is not None else 0.0),
            )
        return ERankReadout(scores, mass)
