"""ListMLE: negative Plackett-Luce log-likelihood of the label order."""

from __future__ import annotations

import torch
from torch import Tensor

from rankwise.train.losses._base import RankingLoss, informative, list_weights, prepare, reduce_lists

__all__ = ["ListMLELoss"]


class ListMLELoss(RankingLoss):
    """ListMLE: the likelihood of the ground-truth permutation under a Plackett-Luce model of scores.

    Formula:
        ``pi`` = candidates sorted by label (descending); ``loss_b = sum_{k=1}^{n} [log sum_{m>=k}
        exp(s_{pi(m)}) - s_{pi(k)}]`` over the ``n`` real candidates; batch: mean over informative lists.

    Paper:
        Xia et al., "Listwise Approach to Learning to Rank: Theory and Algorithm", ICML 2008.
        https://dl.acm.org/doi/10.1145/1390156.1390306. Differences from the paper: candidates
        with equal labels are ordered by descending current score (no gradient through the
        order), the most lenient permutation consistent with the labels; this keeps the loss
        invariant to the input order (sentence-transformers shuffles ties at random instead).

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)``; returns ``()``.

    Example:
        >>> import torch
        >>> round(ListMLELoss()(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.6931
    """

    name = "listmle"

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "ListMLELoss")
        big = 1e30
        # order: real candidates first, by label desc, ties by score desc (lexicographic via two stable sorts)
        by_score = torch.sort(scores.detach().masked_fill(~mask, -big), dim=1, descending=True, stable=True).indices
        lab = torch.gather(labels.masked_fill(~mask, -big), 1, by_score)
        order = torch.gather(by_score, 1, torch.sort(lab, dim=1, descending=True, stable=True).indices)  # (B, L)
        s = torch.gather(scores, 1, order)  # (B, L) in label order
        m = torch.gather(mask, 1, order)  # (B, L) real candidates first
        neg = torch.finfo(s.dtype).min
        tail_lse = torch.logcumsumexp(s.masked_fill(~m, neg).flip(1), dim=1).flip(1)  # (B, L) log sum_{m>=k}
        terms = torch.where(m, tail_lse - s, torch.zeros_like(s))
        per_list = terms.sum(dim=1)
        return reduce_lists(per_list, informative(labels, mask), list_weights(weights, scores.shape[0], "ListMLELoss"), scores)
