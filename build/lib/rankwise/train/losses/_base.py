"""Shared mechanics of the ranking objectives: validation, masks, ranks, pair sets and reduction.

Every objective in :mod:`train.losses` is a :class:`RankingLoss`: one ``forward(scores, labels,
mask, weights, progress)`` signature for the whole family, so a trainer never special-cases a loss.

Conventions (all objectives):
    * ``mask`` is ``True`` on real candidates; padded entries never contribute, whatever their score
      or label (even NaN), and receive zero gradient.
    * A list is *informative* when it holds at least two real candidates with two different labels;
      ranking objectives skip the others (they carry no ordering signal), so lists of length 1 or
      with all-equal labels give a loss of exactly 0 with no NaN.
    * ``weights`` (curriculum): ``(B,)`` per list for every objective, ``(B, L)`` per candidate for
      the pointwise objective, ``(B, L, L)`` per pair ``(i, j)`` for the pairwise objectives.
    * Batch reduction: ``sum_b w_b * loss_b / #informative lists`` (the mean of ``W * loss`` of
      MacAvaney et al.; with unit weights, the mean over informative lists).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RankingLoss", "prepare", "pair_mask", "score_ranks", "reduce_lists"]


def prepare(scores: Tensor, labels: Tensor, mask: Tensor | None, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """Check shapes; return float ``scores``/``labels`` with padding zeroed and a bool ``mask``.

    Shapes: ``scores, labels, mask: (B, L)``.
    """
    if scores.dim() != 2:
        raise ValueError(f"{name}: scores must be (B, L), got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(f"{name}: labels shape {tuple(labels.shape)} != scores shape {tuple(scores.shape)}")
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    elif mask.shape != scores.shape:
        raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    mask = mask.to(torch.bool)
    scores = scores.float().masked_fill(~mask, 0.0)  # (B, L); NaN padding -> 0, zero gradient there
    labels = labels.float().masked_fill(~mask, 0.0)  # (B, L)
    return scores, labels, mask


def informative(labels: Tensor, mask: Tensor) -> Tensor:
    """Lists with >= 2 real candidates and >= 2 distinct labels. Shapes: ``(B, L) -> (B,) bool``."""
    big = torch.finfo(labels.dtype).max
    hi = labels.masked_fill(~mask, -big).amax(dim=1)  # (B,)
    lo = labels.masked_fill(~mask, big).amin(dim=1)  # (B,)
    return (mask.sum(dim=1) >= 2) & (hi > lo)


def pair_mask(labels: Tensor, mask: Tensor, margin: float = 0.0) -> Tensor:
    """``P[b, i, j] = True`` when both are real and ``labels[i] - labels[j] > margin``.

    Shapes: ``labels, mask: (B, L)`` -> ``(B, L, L)`` bool.
    """
    both = mask[:, :, None] & mask[:, None, :]  # (B, L, L)
    return both & ((labels[:, :, None] - labels[:, None, :]) > margin)


@torch.no_grad()
def score_ranks(scores: Tensor, mask: Tensor) -> Tensor:
    """1-based rank of each candidate when its list is sorted by descending score (padding last).

    Ties keep input order. Shapes: ``(B, L) -> (B, L)`` long; no gradient.
    """
    keyed = scores.detach().masked_fill(~mask, float("-inf"))  # (B, L)
    order = torch.sort(keyed, dim=1, descending=True, stable=True).indices  # (B, L)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order))
    return ranks


def list_weights(weights: Tensor | None, batch: int, name: str) -> Tensor | None:
    """Validate per-list weights ``(B,)`` (others are handled by the objective)."""
    if weights is None or weights.dim() != 1:
        return weights
    if weights.shape[0] != batch:
        raise ValueError(f"{name}: per-list weights have {weights.shape[0]} entries for {batch} lists")
    return weights


def pair_weighting(weights: Tensor | None, shape: torch.Size, name: str) -> tuple[Tensor | None, Tensor | None]:
    """Split ``weights`` into (per-list ``(B,)``, per-pair ``(B, L, L)``) for pairwise objectives."""
    if weights is None:
        return None, None
    if weights.dim() == 1:
        return list_weights(weights, shape[0], name), None
    if weights.shape != shape:
        raise ValueError(f"{name}: pair weights must be (B,) or (B, L, L)={tuple(shape)}, got {tuple(weights.shape)}")
    return None, weights.float()


def reduce_lists(per_list: Tensor, valid: Tensor, weights: Tensor | None, anchor: Tensor) -> Tensor:
    """``sum_b w_b * per_list_b / #valid`` over valid lists; a zero that keeps the graph when none.

    Shapes: ``per_list, valid: (B,)``; ``weights: (B,)`` or ``None``; returns ``()``.
    ``anchor`` (the scores) keeps the result attached to the graph when no list is valid.
    """
    per_list = torch.where(valid, per_list, torch.zeros_like(per_list))  # (B,)
    if weights is not None:
        per_list = per_list * weights.to(per_list)
    n = valid.sum()
    if n == 0:
        return anchor.sum() * 0.0
    return per_list.sum() / n


class RankingLoss(nn.Module):
    """Base of every objective: ``forward(scores, labels, mask, weights, progress) -> ()``.

    ``progress`` is the fraction of training done (0 to 1); only schedule-aware objectives
    (RankList's skip widening) read it. Subclasses implement :meth:`forward` and list their knobs
    in :meth:`get_config_dict` (logged beside checkpoints).
    """

    name: str = "ranking"

    def forward(  # noqa: D102 - documented by each subclass
        self,
        scores: Tensor,
        labels: Tensor,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
        progress: float = 1.0,
    ) -> Tensor:
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        """The objective's name and knobs, for run logs and ``rankwise.json``."""
        return {"objective": self.name}


def pairwise_logistic(scores: Tensor, pairs: Tensor, pair_w: Tensor | None, sigma: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-list sum of ``w_ij * softplus(-sigma (s_i - s_j))`` over ``pairs`` and the pair count.

    Shapes: ``scores: (B, L)``, ``pairs: (B, L, L)`` bool, ``pair_w: (B, L, L)`` or ``None``;
    returns ``((B,), (B,))``.
    """
    diff = scores[:, :, None] - scores[:, None, :]  # (B, L, L)  s_i - s_j
    terms = nn.functional.softplus(-sigma * diff)  # (B, L, L)  = -log sigmoid(sigma (s_i - s_j))
    if pair_w is not None:
        terms = terms * pair_w
    terms = torch.where(pairs, terms, torch.zeros_like(terms))
    return terms.sum(dim=(1, 2)), pairs.sum(dim=(1, 2))
