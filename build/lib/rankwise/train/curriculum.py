"""Curriculum weighting from first-stage evidence (MacAvaney et al., SIGIR 2020).

Model-independent: the heuristics read a first-stage run (ranks, scores) and the labels; the
schedule turns an *ease* ``D`` in [0, 1] into a per-sample weight at training iteration ``i``.
Any trainer can use it: the cross-encoder trainer passes the weights to an objective from
:mod:`train.losses` (per list ``(B,)``, per candidate ``(B, L)`` or per pair ``(B, L, L)``); an SFT
trainer can multiply per-example token losses by :meth:`CurriculumSchedule.weight`.

Formula:
    reciprocal rank: ``D = 1/r`` if relevant else ``1 - 1/r`` (``r`` = first-stage rank; absent = large);
    normalised score: ``s_hat`` = per-query min-max score, ``D = s_hat`` if relevant else ``1 - s_hat``;
    pairwise: ``D_ij = (s_hat_i - s_hat_j + 1) / 2`` for a relevant ``i`` and non-relevant ``j``;
    weight at iteration ``i``: ``W = D (1 - i/m) + i/m`` for ``i < m``, then ``1``.

Paper:
    MacAvaney et al., "Training Curricula for Open Domain Answer Re-Ranking", SIGIR 2020.
    https://arxiv.org/abs/2004.14269 (checked against the authors' trainer code). Differences from
    the paper: ``m`` counts optimiser steps (theirs: 20 iterations of 512 samples); weights apply per
    sample inside the loss (their code multiplied batch means, which is coarser); a list's ease
    (ours, for listwise objectives) is the mean ease of its relevant candidates averaged with the mean
    ease of its non-relevant ones, so one positive among many negatives still counts half.

Example:
    >>> import torch
    >>> ranks = torch.tensor([[1, 4, 2]]); labels = torch.tensor([[1.0, 1.0, 0.0]])
    >>> reciprocal_rank_ease(ranks, labels)
    tensor([[1.0000, 0.2500, 0.5000]])
    >>> CurriculumSchedule(m=10).weight(torch.tensor([0.2]), step=5)
    tensor([0.6000])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "HEURISTICS", "CurriculumSchedule", "reciprocal_rank_ease", "normalised_score_ease", "pairwise_ease",
    "list_ease", "curriculum_weights",
]

Heuristic = Literal["bm25-rr", "bm25-score", "bm25-pair"]
HEURISTICS: tuple[str, ...] = ("bm25-rr", "bm25-score", "bm25-pair")


def reciprocal_rank_ease(ranks: Tensor, labels: Tensor) -> Tensor:
    """``D = 1/r`` for relevant candidates, ``1 - 1/r`` otherwise. Shapes: ``(B, L)`` x2 -> ``(B, L)``."""
    rr = 1.0 / ranks.float().clamp(min=1.0)
    return torch.where(labels > 0, rr, 1.0 - rr)


def normalised_score_ease(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """``D = s_hat`` for relevant candidates, ``1 - s_hat`` otherwise; ``s_hat`` = per-list min-max score.

    A list whose real scores are all equal gets ``s_hat = 0.5``. Shapes: ``(B, L)`` -> ``(B, L)``.
    """
    norm = _minmax(scores.float(), mask)
    return torch.where(labels > 0, norm, 1.0 - norm)


def pairwise_ease(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """``D_ij = (s_hat_i - s_hat_j + 1) / 2`` for relevant ``i`` over non-relevant ``j``; 1 elsewhere.

    Shapes: ``(B, L)`` -> ``(B, L, L)`` (input indices, the pair layout of the pairwise objectives).
    """
    norm = _minmax(scores.float(), mask)
    ease = (norm[:, :, None] - norm[:, None, :] + 1.0) / 2.0  # (B, L, L)
    pos_neg = (labels[:, :, None] > 0) & (labels[:, None, :] <= 0)
    return torch.where(pos_neg, ease, torch.ones_like(ease))


def list_ease(item_ease: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-list ease: mean over relevant candidates averaged with the mean over non-relevant ones.

    A list with only one of the two groups uses that group's mean. Shapes: ``(B, L)`` -> ``(B,)``.
    """
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    parts = []
    for group in (mask & (labels > 0), mask & (labels <= 0)):
        n = group.sum(dim=1)
        mean = torch.where(group, item_ease, torch.zeros_like(item_ease)).sum(dim=1) / n.clamp(min=1)
        parts.append((mean, n > 0))
    (mp, hp), (mn, hn) = parts
    both = hp & hn
    return torch.where(both, (mp + mn) / 2, torch.where(hp, mp, torch.where(hn, mn, torch.ones_like(mp))))


def _minmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    big = torch.finfo(scores.dtype).max
    lo = scores.masked_fill(~mask, big).amin(dim=1, keepdim=True)
    hi = scores.masked_fill(~mask, -big).amax(dim=1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (scores - lo) / span.clamp(min=1e-12), torch.full_like(scores, 0.5)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class CurriculumSchedule:
    """Linear annealing of per-sample ease into weights: ``W = D (1 - i/m) + i/m`` until ``i = m``.

    Args:
        m: the iteration (optimiser step) at which every weight reaches 1.
    """

    m: int

    def __post_init__(self) -> None:
        if self.m <= 0:
            raise ValueError(f"CurriculumSchedule: m must be > 0, got {self.m}")

    def weight(self, ease: Tensor, step: int) -> Tensor:
        """Weights for ``ease`` (any shape) at iteration ``step``; all ones from ``step >= m``."""
        if step >= self.m:
            return torch.ones_like(ease)
        frac = step / self.m
        return ease * (1.0 - frac) + frac


def curriculum_weights(
    heuristic: Heuristic,
    schedule: CurriculumSchedule,
    step: int,
    labels: Tensor,
    mask: Tensor,
    first_stage_ranks: Tensor,
    first_stage_scores: Tensor,
) -> Tensor:
    """Weights to pass to an objective: ``(B,)`` per list for ``bm25-rr``/``bm25-score``, ``(B, L, L)``
    per pair for ``bm25-pair`` (pairwise objectives only).

    Shapes: ``labels, mask, first_stage_ranks, first_stage_scores: (B, L)``.
    """
    if heuristic == "bm25-rr":
        ease = list_ease(reciprocal_rank_ease(first_stage_ranks, labels), labels, mask)
    elif heuristic == "bm25-score":
        ease = list_ease(normalised_score_ease(first_stage_scores, labels, mask), labels, mask)
    elif heuristic == "bm25-pair":
        ease = pairwise_ease(first_stage_scores, labels, mask)
    else:
        raise ValueError(f"unknown curriculum heuristic {heuristic!r}; choose one of {list(HEURISTICS)}")
    return schedule.weight(ease, step)
