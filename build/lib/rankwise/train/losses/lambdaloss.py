"""LambdaLoss: pairwise logistic loss weighted by an NDCG-derived swap cost (relative-rank form)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rankwise.train.losses._base import RankingLoss, informative, pair_mask, pair_weighting, pairwise_logistic, prepare, reduce_lists, score_ranks

__all__ = ["LambdaLoss"]

Scheme = Literal["ndcg2pp", "ndcg2", "lambdarank", "none"]


class LambdaLoss(RankingLoss):
    """LambdaLoss with the NDCG-Loss2++ weighting (default), NDCG-Loss2, LambdaRank or none.

    Formula:
        ``loss_b = mean_{(i,j): y_i > y_j} w_ij log(1 + exp(-sigma (s_i - s_j)))`` with
        ``G_i = (2^{y_i} - 1) / maxDCG``, ``D(r) = log2(1 + r)``, ``r_i`` = rank of ``i`` by current
        score, ``delta_ij = |1/D(|r_i - r_j|) - 1/D(|r_i - r_j| + 1)|``:
        ``ndcg2: w = delta_ij |G_i - G_j|``; ``lambdarank: w = |1/D(r_i) - 1/D(r_j)| |G_i - G_j|``;
        ``ndcg2pp: w = mu * ndcg2 + lambdarank``; ``none: w = 1`` (RankNet). Weights carry no gradient.

    Paper:
        Wang et al., "The LambdaLoss Framework for Ranking Metric Optimization", CIKM 2018.
        https://research.google/pubs/the-lambdaloss-framework-for-ranking-metric-optimization/
        Differences from the paper: natural log instead of log2 (a constant factor), mean over pairs
        per list; otherwise the same weights as sentence-transformers' ``LambdaLoss`` (cross-checked
        in the tests).

    Args:
        scheme: weighting scheme; ``"ndcg2pp"`` is the paper's best.
        mu: weight of NDCG-Loss2 inside NDCG-Loss2++.
        sigma: slope of the logistic.
        k: only pairs with at least one member in the current top ``k`` count (NDCG@k); ``None``: all.

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)`` or ``(B, L, L)``; returns ``()``.

    Example:
        >>> import torch
        >>> loss = LambdaLoss()
        >>> loss(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])).item() > 0
        True
    """

    name = "lambdaloss"

    def __init__(self, scheme: Scheme = "ndcg2pp", mu: float = 10.0, sigma: float = 1.0, k: int | None = None) -> None:
        super().__init__()
        if scheme not in ("ndcg2pp", "ndcg2", "lambdarank", "none"):
            raise ValueError(f"{type(self).__name__}: unknown scheme {scheme!r}")
        self.scheme, self.mu, self.sigma, self.k = scheme, mu, sigma, k

    def _weights(self, labels: Tensor, mask: Tensor, ranks: Tensor) -> Tensor:
        """NDCG-derived pair weights. Shapes: ``(B, L)`` x3 -> ``(B, L, L)``."""
        disc = torch.log2(1.0 + ranks.float())  # (B, L) D(r_i)
        ideal = torch.sort(labels.masked_fill(~mask, 0.0).clamp(min=0), dim=1, descending=True).values  # (B, L)
        pos = torch.arange(1, labels.shape[1] + 1, device=labels.device).float()
        kk = self.k or labels.shape[1]
        max_dcg = ((2.0**ideal - 1.0) / torch.log2(1.0 + pos))[:, :kk].sum(dim=1).clamp(min=1e-10)  # (B,)
        gain = (2.0 ** labels.clamp(min=0) - 1.0) / max_dcg[:, None]  # (B, L)
        dgain = (gain[:, :, None] - gain[:, None, :]).abs()  # (B, L, L)
        w = torch.zeros_like(dgain)
        if self.scheme in ("ndcg2", "ndcg2pp"):
            dr = (ranks[:, :, None] - ranks[:, None, :]).abs().float()  # (B, L, L)
            delta = (1.0 / torch.log2(1.0 + dr.clamp(min=1)) - 1.0 / torch.log2(2.0 + dr)).abs()
            w = w + delta * dgain * (self.mu if self.scheme == "ndcg2pp" else 1.0)
        if self.scheme in ("lambdarank", "ndcg2pp"):
            w = w + (1.0 / disc[:, :, None] - 1.0 / disc[:, None, :]).abs() * dgain
        return w

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, type(self).__name__)
        per_list_w, pair_w = pair_weighting(weights, torch.Size((*scores.shape, scores.shape[1])), type(self).__name__)
        pairs = pair_mask(labels, mask)  # (B, L, L)
        if self.k is not None or self.scheme != "none":
            ranks = score_ranks(scores, mask)  # (B, L)
            if self.k is not None:
                top = ranks <= self.k
                pairs = pairs & (top[:, :, None] | top[:, None, :])
            if self.scheme != "none":
                lw = self._weights(labels, mask, ranks)
                pair_w = lw if pair_w is None else pair_w * lw
        total, count = pairwise_logistic(scores, pairs, pair_w, self.sigma)  # (B,), (B,)
        per_list = total / count.clamp(min=1)
        return reduce_lists(per_list, informative(labels, mask) & (count > 0), per_list_w, scores)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "scheme": self.scheme, "mu": self.mu, "sigma": self.sigma, "k": self.k}
