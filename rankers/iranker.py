"""IRanker: rank by iteratively eliminating the least relevant candidate."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Hit, Ranker, candidates_from_hits, group_candidates
from rankwise.rankers.llm import LLMRanker, chat_prompt, next_token_logprobs, single_token_id, truncate_text

__all__ = ["IRanker", "iranker_prompt", "parse_elimination", "elimination_to_order", "CANDIDATE_IDS"]

SYSTEM = "You are a search engine that removes the passage least relevant to a query."
CANDIDATE_IDS = string.ascii_uppercase  # one token each in common tokenizers; at most 26 per pool


def iranker_prompt(tokenizer: PreTrainedTokenizerBase, query: str, docs: Sequence[str]) -> str:
    """The elimination prompt for a pool: passages labelled ``[A]``, ``[B]``, ... in pool order."""
    if len(docs) > len(CANDIDATE_IDS):
        raise ValueError(f"iranker_prompt: at most {len(CANDIDATE_IDS)} candidates per pool, got {len(docs)}")
    passages = "\n".join(f"[{CANDIDATE_IDS[i]}] {d}" for i, d in enumerate(docs))
    user = (
        f"Query: {query}\n{passages}\nWhich passage is the LEAST relevant to the query? "
        f"Answer with its identifier only, e.g. [{CANDIDATE_IDS[len(docs) - 1]}]."
    )
    return chat_prompt(tokenizer, user, system=SYSTEM)


def parse_elimination(text: str, pool_size: int) -> int | None:
    """0-based pool index named by an answer, or None when it names no candidate.

    A bracketed id (``[C]``) anywhere in the answer is read first, else an answer that is a single
    letter; a letter outside the pool is mapped to the closest id in the pool (IRanker maps inexact
    answers to the closest candidate). Free text ("I think none") names no candidate.

    Example:
        >>> parse_elimination("[C]", 4), parse_elimination(" b. ", 4), parse_elimination("[Z]", 4), parse_elimination("I think", 4)
        (2, 1, 3, None)
    """
    match = re.search(r"\[([A-Za-z])\]", text) or re.fullmatch(r"\s*([A-Za-z])[\s.,)]*", text)
    if match is None:
        return None
    index = CANDIDATE_IDS.index(match.group(1).upper())
    return min(index, pool_size - 1)


def elimination_to_order(eliminated: Sequence[int], n: int) -> list[int]:
    """Final order (0-based item ids, best first) from the items eliminated at steps 1..n−1.

    The item eliminated at step t gets rank n − t + 1; the survivor gets rank 1.

    Example:
        >>> elimination_to_order([2, 0, 3], 4)
        [1, 3, 0, 2]
    """
    survivor = [i for i in range(n) if i not in eliminated]
    return survivor + list(reversed(eliminated))


class IRanker(LLMRanker, Ranker):
    """Iterative-elimination ranker: N−1 single-choice steps, batched across queries.

    Formula:
        pool_1 = all N candidates; at step t the model names the least relevant c_t of pool_t
        (argmax of p(id | prompt(pool_t), "[") over the pool's ids), pool_{t+1} = pool_t \\ {c_t};
        rank(c_t) = N − t + 1, the survivor has rank 1. Score = N − rank + 1.

    Paper:
        IRanker: Towards Ranking Foundation Model (Feng et al., 2025), https://arxiv.org/abs/2506.21638.
        Differences from the paper: the answer is read with a constrained one-token readout over the
        pool's letter ids (no free generation and no think/answer tags at inference), so every step
        is valid; candidates keep their first-stage order inside each prompt.

    Args:
        model, tokenizer: a causal LM.
        max_doc_tokens: each passage is cut to this many tokens.
        batch_size: prompts per forward pass (prompts of different queries share a batch).

    Shapes:
        ``score(query, docs)``: ``(len(docs),)``; at most 26 docs per query.

    Example:
        >>> ranker = IRanker.from_pretrained("models/smollm2")  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a fish", "a ranking function", "a tree"])  # doctest: +SKIP
    """

    KIND = "iranker"

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_doc_tokens: int = 64, batch_size: int = 8
    ) -> None:
        super().__init__(model, tokenizer)
        self.max_doc_tokens = max_doc_tokens
        self.batch_size = batch_size
        self._ids = [single_token_id(tokenizer, c) for c in CANDIDATE_IDS]
        self._open = single_token_id(tokenizer, "[")

    def _settings(self) -> dict:
        return {"max_doc_tokens": self.max_doc_tokens}

    def eliminations(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[list[int]]:
        """Items eliminated at each step, per query (0-based ids into that query's ``docs``)."""
        docs = [[truncate_text(self.tokenizer, d, self.max_doc_tokens) for d in ds] for ds in docs]
        pools = [list(range(len(ds))) for ds in docs]
        out: list[list[int]] = [[] for _ in queries]
        while True:
            active = [q for q, pool in enumerate(pools) if len(pool) > 1]
            if not active:
                return out
            prompts = [iranker_prompt(self.tokenizer, queries[q], [docs[q][i] for i in pools[q]]) for q in active]
            logp = next_token_logprobs(
                self.model, self.tokenizer, prompts, 1, self.batch_size, append_ids=[self._open]
            )[:, -1]  # (len(active), V)
            for row, q in enumerate(active):
                pick = int(logp[row, self._ids[: len(pools[q])]].argmax())
                out[q].append(pools[q].pop(pick))

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """``N − rank + 1`` for each document after elimination."""
        return self._scores(self.eliminations([query], [docs])[0], len(docs))

    @staticmethod
    def _scores(eliminated: list[int], n: int) -> np.ndarray:
        scores = np.zeros(n)
        for r, i in enumerate(elimination_to_order(eliminated, n)):
            scores[i] = n - r
        return scores

    def rerank_candidates(
        self,
        candidates: pl.DataFrame,
        queries: Mapping[str, str],
        doc_text: Callable[[str], str] | Mapping[str, str],
        top_k: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> pl.DataFrame:
        """Batch twin of :meth:`rerank`: every query's elimination steps share forward passes."""
        lookup = doc_text.__getitem__ if isinstance(doc_text, Mapping) else doc_text
        qids, ids = zip(*group_candidates(candidates, top_k)) if candidates.height else ((), ())
        elim = self.eliminations([queries[q] for q in qids], [[lookup(d) for d in ds] for ds in ids])
        hits: dict[str, list[Hit]] = {}
        for qid, ds, el in zip(qids, ids, elim):
            scores = self._scores(el, len(ds))
            order = np.argsort(-scores, kind="stable")
            hits[qid] = [Hit(ds[i], float(scores[i]), r + 1) for r, i in enumerate(order)]
            if progress is not None:
                progress(len(ds))
        return candidates_from_hits(hits)
