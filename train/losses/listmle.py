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
        every negative. This is the default (``ties="separate"``).

        ``ties="random"`` is the other common reading (e.g. allRank's ListMLE): each call draws
        a fresh random order within every group of tied labels and applies the paper's formula
        to the whole permutation (every real candidate but the last contributes). In
        expectation over the draws the terms among tied candidates favour equal scores within a
        tie group, so it acts like ListNet's soft target (which puts uniform mass on the
        negatives); per step it trains one random order, a noisy signal, and its expected value has
        a floor of ``sum_g log(n_g!)`` over tie groups of size ``n_g`` (``log 15! = 27.9`` nats
        for 15 tied negatives), approached when each group scores equal and the groups far apart. Ordering ties by the
        current score instead reinforces whatever order the model has (a defect, not offered).

    Args:
        ties: ``"separate"`` (only label-separating positions contribute; deterministic) or
            ``"random"`` (a random order within ties, redrawn at every call; uses torch's RNG).

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)``; returns ``()``.

    Example:
        >>> import torch
        >>> round(ListMLELoss()(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.6931
    """

    name = "listmle"

    def __init__(self, ties: str = "separate") -> None:
        super().__init__()
        if ties not in ("separate", "random"):
            raise ValueError(f"ListMLELoss: ties must be 'separate' or 'random', got {ties!r}")
        self.ties = ties

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "ListMLELoss")
        if self.ties == "random":
            return self._random_ties(scores, labels, mask, weights)
        lower = mask[:, None, :] & (labels[:, None, :] < labels[:, :, None])  # (B, L, L): m below i
        lower = lower | torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)[None]  # i itself
        neg = torch.finfo(scores.dtype).min
        lse = torch.logsumexp(scores[:, None, :].expand_as(lower).masked_fill(~lower, neg), dim=2)  # (B, L)
        lowest = labels.masked_fill(~mask, torch.finfo(labels.dtype).max).amin(dim=1, keepdim=True)  # (B, 1)
        terms = torch.where(mask & (labels > lowest), lse - scores, torch.zeros_like(scores))  # (B, L)
        per_list = terms.sum(dim=1)
        return reduce_lists(per_list, informative(labels, mask), list_weights(weights, scores.shape[0], "ListMLELoss"), scores)

    def _random_ties(self, scores: Tensor, labels: Tensor, mask: Tensor, weights: Tensor | None) -> Tensor:
        """The paper's loss on a label-descending permutation with ties in a random order; padding last."""
        shuffle = torch.rand(labels.shape, device=labels.device).argsort(dim=1)  # (B, L) random order ...
        key = labels.masked_fill(~mask, float("-inf")).gather(1, shuffle)
        order = shuffle.gather(1, key.sort(dim=1, descending=True, stable=True).indices)  # ... kept within ties
        s, m = scores.gather(1, order), mask.gather(1, order)
        neg = torch.finfo(scores.dtype).min
        tail_lse = torch.logcumsumexp(s.masked_fill(~m, neg).flip(1), dim=1).flip(1)  # (B, L): lse over positions >= k
        per_list = torch.where(m, tail_lse - s, torch.zeros_like(s)).sum(dim=1)
        return reduce_lists(per_list, informative(labels, mask), list_weights(weights, scores.shape[0], "ListMLELoss"), scores)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "ties": self.ties}
