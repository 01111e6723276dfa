"""LiPO-λ fine-tuning of the listwise LLM ranker: permutations of a list as graded responses.

For one query window, K candidate permutations are written as answers (``[3] > [1] > ...``), each
graded by its NDCG against the labels; the policy is trained with LiPO-λ on the implicit scores
``β (log π_θ(y|x) − log π_ref(y|x))`` against a frozen copy of the starting model.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rankwise.rankers.listwise import ListwiseRanker, listwise_prompt
from rankwise.rankers.llm import truncate_text
from rankwise.train.losses.lipo import LiPOLambdaLoss, sequence_log_probs

__all__ = ["ListwiseLiPOConfig", "ListwiseLiPOTrainer", "permutation_responses", "order_ndcg", "order_text"]


def order_text(order: Sequence[int]) -> str:
    """The answer for a 0-based order. Example: ``order_text([2, 0])`` → ``'[3] > [1]'``."""
    return " > ".join(f"[{i + 1}]" for i in order)


def order_ndcg(order: Sequence[int], labels: Sequence[float]) -> float:
    """NDCG (linear gain, full length) of an order of the items ``0..n−1``.

    Example:
        >>> order_ndcg([1, 0], [0.0, 1.0]), round(order_ndcg([0, 1], [0.0, 1.0]), 4)
        (1.0, 0.6309)
    """
    dcg = sum(float(labels[i]) / math.log2(r + 2) for r, i in enumerate(order))
    ideal = sum(v / math.log2(r + 2) for r, v in enumerate(sorted(map(float, labels), reverse=True)))
    return dcg / ideal if ideal > 0 else 0.0


def permutation_responses(labels: Sequence[float], k: int, rng: random.Random) -> list[list[int]]:
    """K distinct orders of a list: the ideal one (ties shuffled) first, then random ones.

    Example:
        >>> responses = permutation_responses([0, 2, 1], 3, random.Random(0))
        >>> responses[0], len({tuple(r) for r in responses})
        ([1, 2, 0], 3)
    """
    n = len(labels)
    ideal = sorted(range(n), key=lambda i: (-float(labels[i]), rng.random()))
    out, seen = [ideal], {tuple(ideal)}
    for _ in range(50 * k):
        if len(out) >= min(k, math.factorial(n)):
            break
        perm = rng.sample(range(n), n)
        if tuple(perm) not in seen:
            seen.add(tuple(perm))
            out.append(perm)
    return out


@dataclass(frozen=True)
class ListwiseLiPOConfig:
    """Knobs of :class:`ListwiseLiPOTrainer`.

    Args:
        beta: scale of the implicit reward (the paper: 0.05).
        responses: permutations per list (K; the paper uses lists of 8 responses).
        weighting: ``"lambda"`` (LiPO-λ) or ``"none"`` (pair-logistic; DPO for K = 2).
        learning_rate: AdamW learning rate.
        lists_per_step: lists per optimiser step.
        max_doc_tokens: each passage is cut to this many tokens in the prompt.
        seed: seeds the permutations.
    """

    beta: float = 0.05
    responses: int = 8
    weighting: str = "lambda"
    learning_rate: float = 1e-5
    lists_per_step: int = 1
    max_doc_tokens: int = 64
    seed: int = 0


class ListwiseLiPOTrainer:
    """Fine-tune a :class:`ListwiseRanker`'s model with LiPO-λ over permutations of each list.

    Formula:
        s_k = β (log π_θ(y_k | x) − log π_ref(y_k | x)) (summed answer-token log-probs),
        ψ_k = NDCG(y_k); loss = LiPO-λ(s, ψ) from :class:`train.losses.lipo.LiPOLambdaLoss`.

    Paper:
        LiPO: Listwise Preference Optimization through Learning-to-Rank (Liu et al., 2024),
        https://arxiv.org/abs/2402.01878. Differences from the paper: the responses are permutations
        of the ranker's own window (the ideal order and random ones), graded by NDCG, instead of
        sampled texts graded by a reward model.

    Example:
        >>> trainer = ListwiseLiPOTrainer(ranker, ListwiseLiPOConfig())  # doctest: +SKIP
        >>> trainer.step([("query", ["doc a", "doc b", "doc c"], [0, 2, 1])])  # doctest: +SKIP
    """

    def __init__(self, ranker: ListwiseRanker, config: ListwiseLiPOConfig | None = None) -> None:
        self.ranker = ranker
        self.config = config or ListwiseLiPOConfig()
        self.reference = copy.deepcopy(ranker.model).eval().requires_grad_(False)
        self.loss = LiPOLambdaLoss(weighting=self.config.weighting)
        self.optimizer = torch.optim.AdamW(ranker.model.parameters(), lr=self.config.learning_rate)
        self.rng = random.Random(self.config.seed)

    def _answer_logps(self, model, prompt: str, answers: Sequence[str]) -> Tensor:
        """Summed log-probabilities of each answer after ``prompt``. Shapes: returns ``(K,)``."""
        tok = self.ranker.tokenizer
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        rows = [p + tok(a + tok.eos_token, add_special_tokens=False)["input_ids"] for a in answers]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        target = torch.zeros(len(rows), width, dtype=torch.bool)
        for k, r in enumerate(rows):  # right padding: the answer sits at positions len(p)..len(r)-1
            ids[k, : len(r)] = torch.tensor(r)
            target[k, len(p) : len(r)] = True
        attn = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
        logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device)).logits  # (K, T, V)
        return sequence_log_probs(logits[:, :-1], ids[:, 1:].to(model.device), target[:, 1:].to(model.device))

    def step(self, lists: Sequence[tuple[str, Sequence[str], Sequence[float]]]) -> float:
        """One optimiser step on ``(query, docs, labels)`` lists; returns the loss."""
        tok, cfg = self.ranker.tokenizer, self.config
        policy, reference, grades = [], [], []
        model = self.ranker.model.train()
        for query, docs, labels in lists:
            docs = [truncate_text(tok, d, cfg.max_doc_tokens) for d in docs]
            prompt = listwise_prompt(tok, query, docs)
            orders = permutation_responses(labels, cfg.responses, self.rng)
            answers = [order_text(o) for o in orders]
            policy.append(self._answer_logps(model, prompt, answers))
            with torch.no_grad():
                reference.append(self._answer_logps(self.reference, prompt, answers))
            grades.append(torch.tensor([order_ndcg(o, labels) for o in orders]))
        width = max(len(g) for g in grades)

        def pad(rows: list[Tensor]) -> Tensor:
            return torch.stack([torch.cat([r, r.new_zeros(width - len(r))]) for r in rows])  # (B, K)

        mask = torch.stack([torch.arange(width) < len(g) for g in grades])
        loss = self.loss.policy_loss(pad(policy), pad(reference), pad(grades).to(policy[0].device), mask.to(policy[0].device), beta=cfg.beta)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        model.eval()
        return float(loss.detach())
