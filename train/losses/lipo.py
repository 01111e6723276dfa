"""LiPO-λ: lambda-weighted pairwise logistic loss over ranked lists, for rerankers and LLM policies."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rankwise.train.losses._base import RankingLoss, informative, pair_mask, pair_weighting, pairwise_logistic, prepare, reduce_lists, score_ranks

__all__ = ["LiPOLambdaLoss", "policy_scores", "sequence_log_probs"]


def policy_scores(policy_logps: Tensor, reference_logps: Tensor, beta: float = 0.05) -> Tensor:
    """LiPO/DPO implicit reward ``s_i = beta * (log pi_theta(y_i|x) - log pi_ref(y_i|x))``.

    The reference log-probabilities are detached (a frozen reference).

    Shapes: ``policy_logps, reference_logps: (B, L)`` summed token log-probs -> ``(B, L)``.

    Example:
        >>> import torch
        >>> policy_scores(torch.tensor([[-1.0, -3.0]]), torch.tensor([[-2.0, -2.0]]), beta=0.5)
        tensor([[ 0.5000, -0.5000]])
    """
    if policy_logps.shape != reference_logps.shape:
        raise ValueError(f"policy_scores: shapes {tuple(policy_logps.shape)} and {tuple(reference_logps.shape)} differ")
    return beta * (policy_logps - reference_logps.detach())


def sequence_log_probs(logits: Tensor, target_ids: Tensor, target_mask: Tensor) -> Tensor:
    """Summed log-probability of each sequence's target tokens under a causal LM.

    ``logits[n, t]`` predicts ``target_ids[n, t]`` (shift before calling: ``logits[:, :-1]`` with
    ``input_ids[:, 1:]``); ``target_mask`` selects the completion tokens (prompt and padding False).

    Shapes: ``logits: (N, T, V)``, ``target_ids: (N, T)``, ``target_mask: (N, T)`` -> ``(N,)``.

    Example:
        >>> import torch
        >>> lp = sequence_log_probs(torch.zeros(1, 2, 4), torch.tensor([[1, 2]]), torch.tensor([[True, True]]))
        >>> round(lp.item(), 4)  # 2 * log(1/4)
        -2.7726
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, T, V)
    tok = torch.gather(logp, 2, target_ids.long().unsqueeze(-1)).squeeze(-1)  # (N, T)
    return torch.where(target_mask.bool(), tok, torch.zeros_like(tok)).sum(dim=1)


class LiPOLambdaLoss(RankingLoss):
    """LiPO-λ: pairwise logistic loss with LambdaRank-style weights from the current ranking.

    Formula:
        ``loss_b = sum_{(i,j): psi_i > psi_j} Delta_ij log(1 + exp(-(s_i - s_j)))`` with
        ``Delta_ij = |G_i - G_j| |1/D(tau_i) - 1/D(tau_j)|``, ``G = 2^psi``, ``psi = y / max_label``
        (in [0, 1]), ``D(tau) = log2(1 + tau)``, ``tau`` = 1-based rank by current score; ``Delta`` has
        no gradient; ties form no pair. Batch: mean over informative lists. ``weighting="none"``
        sets ``Delta = 1`` (for a list of two this is exactly the DPO loss).

    Paper:
        Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank", 2024.
        https://arxiv.org/abs/2402.01878. Differences from the paper: the printed leading minus of
        the objective is a sign slip (we minimise ``-Delta log sigma(s_i - s_j)``); ``D`` uses log2
        (the paper writes log; a constant factor). ``Delta`` equals TF-Ranking's NDCG lambda weight
        in its absolute-rank form (not LambdaLoss's relative-rank form). For a cross-encoder ``s`` is
        the logit; for an LLM policy use :meth:`policy_loss` (``s = beta * log-ratio``, the paper's
        setting with ``beta = 0.05``, lists of 8).

    Args:
        weighting: ``"lambda"`` (LiPO-λ) or ``"none"`` (unit weights: the pair-logistic / DPO loss).
        max_label: the label scaled to psi = 1; ``None`` uses each list's largest label (so 2^psi
            never explodes on 0-10 labels).

    Shapes:
        ``scores, labels, mask: (B, L)``; ``weights: (B,)`` or ``(B, L, L)``; returns ``()``.

    Example:
        >>> import torch
        >>> loss = LiPOLambdaLoss(weighting="none")
        >>> round(loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.3133
    """

    name = "lipo"

    def __init__(self, weighting: Literal["lambda", "none"] = "lambda", max_label: float | None = None) -> None:
        super().__init__()
        if weighting not in ("lambda", "none"):
            raise ValueError(f"LiPOLambdaLoss: weighting must be 'lambda' or 'none', got {weighting!r}")
        if max_label is not None and max_label <= 0:
            raise ValueError(f"LiPOLambdaLoss: max_label must be > 0, got {max_label}")
        self.weighting, self.max_label = weighting, max_label

    def lambda_weights(self, scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """``Delta_ij`` from the current ranking. Shapes: ``(B, L)`` x3 -> ``(B, L, L)``, no gradient."""
        with torch.no_grad():
            if self.max_label is None:
                top = labels.masked_fill(~mask, 0.0).amax(dim=1, keepdim=True).clamp(min=1e-12)  # (B, 1)
            else:
                top = torch.full_like(labels[:, :1], self.max_label)
            gain = 2.0 ** (labels / top).clamp(0.0, 1.0)  # (B, L)
            inv_disc = 1.0 / torch.log2(1.0 + score_ranks(scores, mask).float())  # (B, L)
            return (gain[:, :, None] - gain[:, None, :]).abs() * (inv_disc[:, :, None] - inv_disc[:, None, :]).abs()

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "LiPOLambdaLoss")
        per_list_w, pair_w = pair_weighting(weights, torch.Size((*scores.shape, scores.shape[1])), "LiPOLambdaLoss")
        if self.weighting == "lambda":
            lw = self.lambda_weights(scores, labels, mask)
            pair_w = lw if pair_w is None else pair_w * lw
        total, count = pairwise_logistic(scores, pair_mask(labels, mask), pair_w)  # (B,), (B,)
        return reduce_lists(total, informative(labels, mask) & (count > 0), per_list_w, scores)

    def policy_loss(
        self,
        policy_logps: Tensor,
        reference_logps: Tensor,
        labels: Tensor,
        mask: Tensor | None = None,
        weights: Tensor | None = None,
        beta: float = 0.05,
    ) -> Tensor:
        """LiPO-λ for an LLM policy: the loss on ``beta * (log pi - log pi_ref)`` scores.

        Shapes: ``policy_logps, reference_logps, labels, mask: (B, L)`` (summed token log-probs of
        each list's ``L`` responses, see :func:`sequence_log_probs`); returns ``()``.
        """
        return self(policy_scores(policy_logps, reference_logps, beta), labels, mask, weights)

    def get_config_dict(self) -> dict:
        return {"objective": self.name, "weighting": self.weighting, "max_label": self.max_label}
