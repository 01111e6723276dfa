"""Pointwise binary cross-entropy on each candidate's logit."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rankwise.train.losses._base import RankingLoss, list_weights, prepare, reduce_lists

__all__ = ["PointwiseBCELoss"]


class PointwiseBCELoss(RankingLoss):
    """Binary cross-entropy between ``sigmoid(s_i)`` and the label scaled to [0, 1].

    Formula:
        ``t_i = clamp(y_i / max_label, 0, 1)``; ``loss_b = mean_i [-t_i log sigma(s_i) - (1 - t_i) log(1 - sigma(s_i))]``
        over real candidates; batch: mean over lists with at least one real candidate.

    Paper:
        The standard pointwise baseline (e.g. Nogueira & Cho, "Passage Re-ranking with BERT", 2019,
        https://arxiv.org/abs/1901.04085). Differences: graded labels become soft targets.
        Unlike the ranking objectives, a pointwise loss is defined per candidate, so lists of
        length 1 or with all-equal labels *do* contribute (there is still no NaN).

    Args:
        max_label: the label that maps to target 1 (1 for binary qrels, 3 for 0-3 grades).
        pos_weight: weight of the positive term ``-t_i log sigma(s_i)`` (``None``: 1). With ~1
            positive in 16 candidates, ``pos_weight`` near the negative/positive ratio keeps the
            gradient from being spent on the label prior (torch's ``pos_weight``).

    The trainer also starts a fresh head's bias at the logit of the positive rate
    (``CrossEncoderTrainerConfig.init_head_bias``), so the loss starts at the prior's entropy.

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)`` per list or ``(B, L)`` per candidate;
        returns ``()``.

    Example:
        >>> import torch
        >>> round(PointwiseBCELoss()(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item(), 4)
        0.6931
    """

    name = "pointwise"

    def __init__(self, max_label: float = 1.0, pos_weight: float | None = None) -> None:
        super().__init__()
        if max_label <= 0:
            raise ValueError(f"PointwiseBCELoss: max_label must be > 0, got {max_label}")
        if pos_weight is not None and pos_weight <= 0:
            raise ValueError(f"PointwiseBCELoss: pos_weight must be > 0, got {pos_weight}")
        self.max_label = max_label
        self.pos_weight = pos_weight

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "PointwiseBCELoss")
        target = (labels / self.max_label).clamp(0.0, 1.0)  # (B, L)
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=scores.device)
        terms = nn.functional.binary_cross_entropy_with_logits(scores, target, reduction="none", pos_weight=pos_weight)  # (B, L)
        per_list_w = None
        if weights is not None and weights.dim() == 2:
            if weights.shape != scores.shape:
                raise ValueError(f"PointwiseBCELoss: per-candidate weights {tuple(weights.shape)} != {tuple(scores.shape)}")
            terms = terms * weights.to(terms)
        else:
            per_list_w = list_weights(weights, scores.shape[0], "PointwiseBCELoss")
        terms = torch.where(mask, terms, torch.zeros_like(terms))
        n = mask.sum(dim=1)  # (B,)
        return reduce_lists(terms.sum(dim=1) / n.clamp(min=1), n > 0, per_list_w, scores)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "max_label": self.max_label, "pos_weight": self.pos_weight}
