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
        https://dl.acm.org/doi/10.1145/1390156.1390306. Differences from the paper (ties): qrels
        give few distinct labels (one positive and ~15 tied negatives per list is typical), so the
        label order is not a permutation. Only the positions that separate different labels
        contribute: candidate ``i`` is compared with itself and the candidates of *lower* label,
        never with its tied peers, and candidates of the lowest label contribute no term:

            ``loss_b = sum_{i: y_i > min y} [log (exp(s_i) + sum_{m: y_m < y_i} exp(s_m)) - s_i]``.

        With distinct labels this is exactly ListMLE (the candidates after ``i`` in the label
        order are the lower-labelled ones). With ties, ordering them by any rule (the current
        score, or at random) makes most terms train one arbitrary order of tied negatives among
        themselves, which pushes some negatives *up*; this form is deterministic and invariant
        to the order of tied candidates. With binary labels each positive is scored against
        every negative.

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
        lower = mask[:, None, :] & (labels[:, None, :] < labels[:, :, None])  # (B, L, L): m below i
        lower = lower | torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)[None]  # i itself
        neg = torch.finfo(scores.dtype).min
        lse = torch.logsumexp(scores[:, None, :].expand_as(lower).masked_fill(~lower, neg), dim=2)  # (B, L)
        lowest = labels.masked_fill(~mask, torch.finfo(labels.dtype).max).amin(dim=1, keepdim=True)  # (B, 1)
        terms = torch.where(mask & (labels > lowest), lse - scores, torch.zeros_like(scores))  # (B, L)
        per_list = terms.sum(dim=1)
        return reduce_lists(per_list, informative(labels, mask), list_weights(weights, scores.shape[0], "ListMLELoss"), scores)
