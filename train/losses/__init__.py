"""Ranking objectives: pure functions of ``scores (B, L)``, ``labels (B, L)``, ``mask (B, L)`` -> scalar.

Every objective shares one signature, ``loss(scores, labels, mask=None, weights=None, progress=1.0)``;
:data:`OBJECTIVES` maps the CLI names to the classes and :func:`make_objective` builds one.
"""

from __future__ import annotations

from typing import Any

from rankwise.train.losses._base import RankingLoss
from rankwise.train.losses.distillation import ScoreDistillationMSELoss
from rankwise.train.losses.lambdaloss import LambdaLoss
from rankwise.train.losses.lipo import LiPOLambdaLoss, policy_scores, sequence_log_probs
from rankwise.train.losses.listmle import ListMLELoss
from rankwise.train.losses.listnet import ListNetLoss
from rankwise.train.losses.pointwise import PointwiseBCELoss
from rankwise.train.losses.ranklist import RankListLoss
from rankwise.train.losses.ranknet import RankNetLoss

__all__ = [
    "OBJECTIVES", "make_objective", "RankingLoss", "PointwiseBCELoss", "RankNetLoss", "ListNetLoss", "ListMLELoss",
    "LambdaLoss", "LiPOLambdaLoss", "RankListLoss", "ScoreDistillationMSELoss", "policy_scores", "sequence_log_probs",
]

OBJECTIVES: dict[str, type[RankingLoss]] = {
    "pointwise": PointwiseBCELoss,
    "ranknet": RankNetLoss,
    "listnet": ListNetLoss,
    "listmle": ListMLELoss,
    "lambdaloss": LambdaLoss,
    "lipo": LiPOLambdaLoss,
    "ranklist": RankListLoss,
    "distill-mse": ScoreDistillationMSELoss,  # labels = a teacher's logits (trainer `teacher=`)
}


def make_objective(name: str, **kwargs: Any) -> RankingLoss:
    """Build the objective registered as ``name`` (one of :data:`OBJECTIVES`) with its knobs."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**kwargs)
