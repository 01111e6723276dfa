"""Which PyTorch class loads each ``rankwise.json`` kind (shared by the exporter and the library API),
read from :mod:`rankwise.core.registry`."""

from __future__ import annotations

from typing import Any

from rankwise.core.registry import kinds, load_target

__all__ = ["RECOMMENDER_CLASSES", "ranker_classes", "load_class"]

RECOMMENDER_CLASSES: dict[str, str] = {n: k.model for n, k in kinds("recommend").items()}
"""Recommender class per kind (SASRec, HSTU, ReaRec, HLLM, HCN: ``from_pretrained``)."""


def ranker_classes() -> dict[str, str]:
    """Ranker class per kind, read at call time (kinds registered later count)."""
    return {n: k.model for n, k in kinds("rerank").items()}


def load_class(target: str) -> Any:
    """Import ``module:Class``."""
    return load_target(target)
