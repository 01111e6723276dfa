"""ListNet: cross-entropy between the softmax of the labels and the softmax of the scores."""

from __future__ import annotations

import torch
from torch import Tensor

from rankwise.train.losses._base import RankingLoss, informative, list_weights, prepare, reduce_lists

__all__ = ["ListNetLoss"]


class ListNetLoss(RankingLoss):
    """ListNet (top-one probability) loss.

    Formula:
        ``P_y = softmax(y / T)``, ``P_s = softmax(s)`` over the real candidates of a list;
        ``loss_b = -sum_i P_y(i) log P_s(i)``; batch: mean over informative lists.

    Paper:
        Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach", ICML 2007.
        https://dl.acm.org/doi/10.1145/1273496.1273513. Differences from the paper: lists whose
        labels are all equal are skipped (their target is uniform and carries no ordering); with
        ``T = 1`` the value equals sentence-transformers' ``ListNetLoss`` on informative lists.

    Args:
        temperature: ``T``, sharpness of the label distribution.

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)``; returns ``()``.

    Example:
        >>> import torch
        >>> round(ListNetLoss()(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.6931
    """

    name = "listnet"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"ListNetLoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "ListNetLoss")
        neg = torch.finfo(scores.dtype).min
        target = torch.softmax((labels / self.temperature).masked_fill(~mask, neg), dim=1)  # (B, L)
        logp = torch.log_softmax(scores.masked_fill(~mask, neg), dim=1)  # (B, L)
        per_list = -(target * torch.where(mask, logp, torch.zeros_like(logp))).sum(dim=1)  # (B,)
        return reduce_lists(per_list, informative(labels, mask), list_weights(weights, scores.shape[0], "ListNetLoss"), scores)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "temperature": self.temperature}
