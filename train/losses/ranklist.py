"""RankList: list-level RankNet with local and non-local pairs, LSE form and widening skips."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from rankwise.train.losses._base import RankingLoss, informative, pair_weighting, prepare, reduce_lists

__all__ = ["RankListLoss"]


class RankListLoss(RankingLoss):
    """RankList: the negative log-likelihood of a label-sorted list built from RankNet pair terms.

    Formula:
        Sort a list by label (descending; ties by descending current score, no gradient), positions
        ``1..n``. A pair ``(i, j)`` counts when ``pos_i < pos_j``, ``y_i - y_j > margin`` and the skip
        ``k = pos_j - pos_i <= K(progress)``.
        ``exact``: ``loss_b = sum_{(i,j)} log(1 + exp(s_j - s_i))`` (local pairs ``k = 1`` plus non-local).
        ``lse``: ``loss_b = sum_i log(1 + sum_{j: (i,j)} exp(s_j - s_i)) = sum_i [LSE(s_i, s_j...) - s_i]``,
        one softmax term per anchor (a lower bound of ``exact``, equal when an anchor has one pair).
        Skip schedule: ``K(p) = 1 + floor((n - 2) * min(1, p / widen_until))``: adjacent pairs only at
        the start, every pair from ``progress = widen_until`` on. Batch: mean over informative lists.

    Paper:
        Naini, Diaz, Busso, "RankList: A Listwise Preference Learning Framework for Predicting
        Subjective Preferences", 2025. https://arxiv.org/abs/2508.09826. Differences from the
        paper: its full text and code were not reachable here; this is *our* reading of the
        abstract (list likelihood from local + non-local RankNet terms, a log-sum-exp approximation,
        skip-wise comparisons). The linear skip schedule, tie order and ``margin`` semantics are ours.
        The LSE form is computed as a masked ``(B, L, L)`` logsumexp (O(L^2) memory, fine for
        reranking lists of <= a few hundred candidates).

    Args:
        form: ``"lse"`` (default) or ``"exact"`` pairwise NLL.
        margin: a pair needs ``y_i - y_j > margin`` (the paper's minimum label gap ``W``).
        widen_until: training fraction at which every skip is visible; ``0`` disables the schedule.

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)`` or ``(B, L, L)`` (pair ``(i, j)`` in input
        indices); ``progress``: float in [0, 1]; returns ``()``.

    Example:
        >>> import torch
        >>> loss = RankListLoss()
        >>> round(loss(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]])).item(), 4)  # log 3 + log 2
        1.7918
    """

    name = "ranklist"

    def __init__(self, form: Literal["lse", "exact"] = "lse", margin: float = 0.0, widen_until: float = 0.5) -> None:
        super().__init__()
        if form not in ("lse", "exact"):
            raise ValueError(f"RankListLoss: form must be 'lse' or 'exact', got {form!r}")
        if not 0.0 <= widen_until <= 1.0:
            raise ValueError(f"RankListLoss: widen_until must be in [0, 1], got {widen_until}")
        self.form, self.margin, self.widen_until = form, margin, widen_until

    def max_skip(self, progress: float, n: int) -> int:
        """Largest visible skip ``K`` at training fraction ``progress`` for lists of ``n`` candidates."""
        if self.widen_until == 0.0:
            return max(n - 1, 1)
        frac = min(1.0, max(0.0, progress) / self.widen_until)
        return 1 + math.floor((max(n, 2) - 2) * frac)

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "RankListLoss")
        bsz, length = scores.shape
        per_list_w, pair_w = pair_weighting(weights, torch.Size((bsz, length, length)), "RankListLoss")
        big = 1e30
        with torch.no_grad():  # positions in the label order (ties by score), padding last
            by_score = torch.sort(scores.masked_fill(~mask, -big), dim=1, descending=True, stable=True).indices
            lab = torch.gather(labels.masked_fill(~mask, -big), 1, by_score)
            order = torch.gather(by_score, 1, torch.sort(lab, dim=1, descending=True, stable=True).indices)
            pos = torch.empty_like(order)
            pos.scatter_(1, order, torch.arange(length, device=scores.device).expand_as(order))  # (B, L)
            skip = pos[:, None, :] - pos[:, :, None]  # (B, L, L)  pos_j - pos_i
            n_max = int(mask.sum(dim=1).max().item()) if length else 0
            pairs = (
                mask[:, :, None] & mask[:, None, :]
                & ((labels[:, :, None] - labels[:, None, :]) > self.margin)
                & (skip >= 1) & (skip <= self.max_skip(progress, n_max))
            )  # (B, L, L): i is the anchor, j a lower-labelled candidate within the skip window
        diff = scores[:, None, :] - scores[:, :, None]  # (B, L, L)  s_j - s_i
        if self.form == "exact":
            terms = nn.functional.softplus(diff)
            if pair_w is not None:
                terms = terms * pair_w
            per_list = torch.where(pairs, terms, torch.zeros_like(terms)).sum(dim=(1, 2))
        else:
            logits = diff if pair_w is None else diff + torch.log(pair_w.clamp(min=1e-30))
            neg = torch.finfo(diff.dtype).min
            masked = torch.where(pairs, logits, torch.full_like(logits, neg))  # (B, L, L)
            zero = torch.zeros_like(masked[:, :, :1])  # the anchor's own term: exp(s_i - s_i) = 1
            per_anchor = torch.logsumexp(torch.cat([zero, masked], dim=2), dim=2)  # (B, L) log(1 + sum_j e^{s_j-s_i})
            has = pairs.any(dim=2)
            per_list = torch.where(has, per_anchor, torch.zeros_like(per_anchor)).sum(dim=1)
        count = pairs.sum(dim=(1, 2))
        return reduce_lists(per_list, informative(labels, mask) & (count > 0), per_list_w, scores)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "form": self.form, "margin": self.margin, "widen_until": self.widen_until}
