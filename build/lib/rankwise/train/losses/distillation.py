"""Score distillation: regress a student's logits onto a teacher's logits (MSE)."""

from __future__ import annotations

from torch import Tensor

from rankwise.train.losses._base import RankingLoss, list_weights, prepare, reduce_lists

__all__ = ["ScoreDistillationMSELoss"]


class ScoreDistillationMSELoss(RankingLoss):
    """Mean squared error between the student's score and the teacher's score of each candidate.

    Here ``labels`` are not relevance judgements but the teacher's logits for the same pairs (the
    trainer fills them when it is given a ``teacher``).

    Formula:
        ``loss_b = mean_i (s_i - t_i)^2`` over the real candidates of list ``b``; batch: mean over
        lists with at least one real candidate (per-list weights multiply ``loss_b``).

    Paper:
        Pointwise logit matching, the plain form of cross-encoder distillation (Hofstätter et al.,
        "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
        2020, https://arxiv.org/abs/2010.02666, whose Margin-MSE matches score *differences*
        instead). Matching absolute logits keeps the student's scores interchangeable with the
        teacher's, which is what quantisation-aware distillation (:mod:`train.quantization_aware`)
        needs: the int8 model must rank, and score, like the fp32 one.

    Related: sentence-transformers ``cross_encoder.losses.MSELoss`` (the same loss over flat pairs);
    :class:`~train.losses.listnet.ListNetLoss` with teacher logits as labels matches the
    within-list softmax only.

    Inputs:
        ===============================  =========================  ================
        scores ``(B, L)``                labels ``(B, L)``          mask ``(B, L)``
        ===============================  =========================  ================
        student logits                   teacher logits             real candidates
        ===============================  =========================  ================

    Shapes:
        returns ``()``; ``weights``: ``(B,)`` per list or ``None``.

    Example:
        >>> import torch
        >>> ScoreDistillationMSELoss()(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])).item()
        0.5
    """

    name = "distill-mse"

    def forward(
        self, scores: Tensor, labels: Tensor, mask: Tensor | None = None, weights: Tensor | None = None, progress: float = 1.0
    ) -> Tensor:
        scores, labels, mask = prepare(scores, labels, mask, "ScoreDistillationMSELoss")
        per_list_w = list_weights(weights, scores.shape[0], "ScoreDistillationMSELoss")
        if per_list_w is not None and per_list_w.dim() != 1:
            raise ValueError(f"ScoreDistillationMSELoss: weights must be (B,), got {tuple(per_list_w.shape)}")
        terms = (scores - labels).pow(2).masked_fill(~mask, 0.0)  # (B, L)
        n = mask.sum(dim=1)  # (B,)
        return reduce_lists(terms.sum(dim=1) / n.clamp(min=1), n > 0, per_list_w, scores)
