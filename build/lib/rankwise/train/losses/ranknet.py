"""RankNet: the unweighted pairwise logistic loss (LambdaLoss with no weighting)."""

from __future__ import annotations

from rankwise.train.losses.lambdaloss import LambdaLoss

__all__ = ["RankNetLoss"]


class RankNetLoss(LambdaLoss):
    """RankNet: pairwise logistic loss over every pair with different labels.

    Formula:
        ``loss_b = mean_{(i,j): y_i > y_j} log(1 + exp(-sigma (s_i - s_j)))``; batch: mean over
        informative lists (curriculum weights multiply each list or each pair).

    Paper:
        Burges et al., "Learning to Rank using Gradient Descent", ICML 2005.
        https://dl.acm.org/doi/10.1145/1102351.1102363. Differences from the paper: none beyond
        the normalisation (mean over pairs per list, as sentence-transformers' ``RankNetLoss``
        with ``reduction_log="natural"``).

    Args:
        sigma: slope of the logistic.

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)`` or ``(B, L, L)``; returns ``()``.

    Example:
        >>> import torch
        >>> loss = RankNetLoss()
        >>> round(loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.3133
    """

    name = "ranknet"

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__(scheme="none", sigma=sigma)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "sigma": self.sigma}
