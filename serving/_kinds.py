"""Which PyTorch class loads each ``rankwise.json`` kind (shared by the exporter and the library API)."""

from __future__ import annotations

import importlib
from typing import Any

RANKER_CLASSES: dict[str, str] = {"cross-encoder": "rankers.cross_encoder:CrossEncoder"}
"""PyTorch ranker class per kind (``module:Class`` with ``from_pretrained``)."""

RECOMMENDER_CLASSES: dict[str, str] = {"sasrec": "recsys.sasrec:SASRec"}
"""Recommender class per kind (a ``recsys._seq.SequentialRecommender`` with ``from_pretrained``)."""


def load_class(target: str) -> Any:
    """Import ``module:Class``."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
