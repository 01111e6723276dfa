"""IRanker: rank by iteratively eliminating the least relevant candidate."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rankwise.rankers.base import Hit, Ranker, candidates_from_hits, group_candidates
from rankwise.rankers.llm import LLMRanker, chat_prompt, next_token_logprobs, single_token_id, truncate_text

__all__ = ["IRanker", "iranker_prompt", "parse_elimination", "elimination_to_order", "CANDIDATE_IDS"]

SYSTEM = "You are a search engine that removes the passage least relevant to a query."
CONTENT_FREE = "N/A"  # the passage text of a calibration prompt (Zhao et al., 2021)
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
        pool_1 = all N candidates; at step t each of P orderings π_1..π_P of pool_t is shown as one
        prompt and read once: ℓ_p(j) = log p(letter j | prompt(π_p(pool_t)), "[") renormalised over
        the pool's letters. With calibration, the content-free prior c(j) (the same prompt with every
        passage replaced by "N/A") is subtracted: ℓ_p(j) − c(j). The item named least relevant is
        c_t = argmax_i Σ_p (ℓ_p − c)(π_p⁻¹(i)); pool_{t+1} = pool_t \\ {c_t}; rank(c_t) = N − t + 1,
        the survivor has rank 1. Score = N − rank + 1.

    Paper:
        IRanker: Towards Ranking Foundation Model (Feng et al., 2025), https://arxiv.org/abs/2506.21638.
        Contextual calibration: Calibrate Before Use (Zhao et al., 2021), https://arxiv.org/abs/2102.09690.
        Differences from the paper: the answer is read with a constrained one-token readout over the
        pool's letter ids (no free generation and no think/answer tags at inference), so every step
        is valid. Ours: position-bias removal. A small model's letter choice is dominated by a prior
        over letters (e.g. "A" or the last id); with pools in first-stage order that prior turns the
        ranking into a fixed function of the BM25 order. So (1) every pool is shuffled with an RNG
        seeded by ``(seed, query)`` (deterministic per query, independent of batching), which breaks
        the alignment of the prior with the first-stage order; (2) the letter prior is calibrated
        away with a content-free prompt per (query, pool size): short prompts, about the cost of
        one extra passage per step; (3) optionally P > 1 orderings are averaged (the shuffle, then
        its reverse, then a new shuffle, ...): a shuffle and its reverse cancel any prior linear in
        the position, and more orderings average out position × content effects that calibration
        cannot see, at P times the forward passes. P = 1 by default because (1) and (2) remove the
        systematic bias at almost no cost; P is the knob for the rest.

    Args:
        model, tokenizer: a causal LM.
        max_doc_tokens: each passage is cut to this many tokens.
        batch_size: prompts per forward pass (prompts of different queries share a batch).
        permutations: orderings of each pool read and averaged per step (≥ 1; P forward passes).
        calibrate: subtract the content-free letter prior (one short extra prompt per step).
        seed: seeds the per-query shuffles.
        device, dtype: see :class:`rankers.llm.LLMRanker`.

    Shapes:
        ``score(query, docs)``: ``(len(docs),)``; at most 26 docs per query.

    Example:
        >>> ranker = IRanker.from_pretrained("models/smollm2", permutations=2)  # doctest: +SKIP
        >>> ranker.rerank("what is bm25", ["a fish", "a ranking function", "a tree"])  # doctest: +SKIP
    """

    KIND = "iranker"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_doc_tokens: int = 64,
        batch_size: int = 8,
        permutations: int = 1,
        calibrate: bool = True,
        seed: int = 0,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(model, tokenizer, device=device, dtype=dtype)
        if permutations < 1:
            raise ValueError(f"IRanker: permutations must be >= 1, got {permutations}")
        self.max_doc_tokens = max_doc_tokens
        self.batch_size = batch_size
        self.permutations = permutations
        self.calibrate = calibrate
        self.seed = seed
        self._ids = [single_token_id(tokenizer, c) for c in CANDIDATE_IDS]
        self._open = single_token_id(tokenizer, "[")

    def _settings(self) -> dict:
        return {
            "max_doc_tokens": self.max_doc_tokens, "permutations": self.permutations,
            "calibrate": self.calibrate, "seed": self.seed,
        }

    def _orderings(self, rng: random.Random, m: int) -> list[list[int]]:
        """P orderings of pool positions ``0..m−1``: a shuffle, its reverse, a new shuffle, ..."""
        out: list[list[int]] = []
        for p in range(self.permutations):
            out.append(out[-1][::-1] if p % 2 else rng.sample(range(m), m))
        return out

    def _letter_logprobs(self, prompts: list[str], sizes: list[int]) -> list[torch.Tensor]:
        """Log-probabilities of each prompt's pool letters, renormalised over the pool: ``[(m,), ...]``."""
        if not prompts:
            return []
        logp = next_token_logprobs(
            self.model, self.tokenizer, prompts, 1, self.batch_size, append_ids=[self._open]
        )[:, -1]  # (len(prompts), V)
        return [torch.log_softmax(logp[row, self._ids[:m]], dim=-1) for row, m in enumerate(sizes)]

    def eliminations(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> list[list[int]]:
        """Items eliminated at each step, per query (0-based ids into that query's ``docs``)."""
        docs = [[truncate_text(self.tokenizer, d, self.max_doc_tokens) for d in ds] for ds in docs]
        pools = [list(range(len(ds))) for ds in docs]
        rngs = [random.Random(f"{self.seed}\x1f{q}") for q in queries]
        prior: dict[tuple[str, int], torch.Tensor] = {}  # (query, pool size) -> (m,) content-free log-probs
        out: list[list[int]] = [[] for _ in queries]
        while True:
            active = [q for q, pool in enumerate(pools) if len(pool) > 1]
            if not active:
                return out
            orders = {q: self._orderings(rngs[q], len(pools[q])) for q in active}
            jobs = [(q, perm) for q in active for perm in orders[q]]
            letter_logp = self._letter_logprobs(
                [iranker_prompt(self.tokenizer, queries[q], [docs[q][pools[q][j]] for j in perm]) for q, perm in jobs],
                [len(perm) for _, perm in jobs],
            )
            if self.calibrate:
                missing = sorted({(queries[q], len(pools[q])) for q in active} - set(prior))
                cf = self._letter_logprobs(
                    [iranker_prompt(self.tokenizer, query, [CONTENT_FREE] * m) for query, m in missing],
                    [m for _, m in missing],
                )
                prior.update(zip(missing, cf))
            votes = {q: torch.zeros(len(pools[q])) for q in active}  # (m,) per query, by pool position
            for (q, perm), lp in zip(jobs, letter_logp):
                if self.calibrate:
                    lp = lp - prior[(queries[q], len(pools[q]))]
                votes[q][torch.tensor(perm)] += lp  # letter j names pool position perm[j]
            for q in active:
                out[q].append(pools[q].pop(int(votes[q].argmax())))

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
