"""Which PyTorch class loads each ``rankwise.json`` kind (shared by the exporter and the library API)."""

from __future__ import annotations

import importlib
from typing import Any

def _recommenders() -> dict[str, str]:
    from rankwise.recsys import MODEL_KINDS

    return {kind: f"rankwise.recsys:{name}" for kind, name in MODEL_KINDS.items()}


RECOMMENDER_CLASSES: dict[str, str] = _recommenders()
"""Recommender class per kind, from ``recsys.MODEL_KINDS`` (SASRec, ReaRec, HLLM, HCN: ``from_pretrained``)."""


def ranker_classes() -> dict[str, str]:
    """Ranker class per kind: ``rankers.RANKER_KINDS``, read at call time (kinds registered later count)."""
    from rankwise.rankers import RANKER_KINDS

    return dict(RANKER_KINDS)


def load_class(target: str) -> Any:
    """Import ``module:Class``."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
