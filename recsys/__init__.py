"""Sequential recommenders (SASRec, ReaRec, HLLM, HCN-style) with one surface and full-ranking evaluation.

Names are imported lazily so that ``rankwise --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = [
    "SASRec", "SASRecConfig", "ReaRec", "ReaRecConfig", "HLLM", "HLLMConfig", "HCN", "HCNConfig",
    "MODEL_KINDS", "load_recommender",
]

_HOME = {
    "SASRec": "sasrec", "SASRecConfig": "sasrec", "ReaRec": "rearec", "ReaRecConfig": "rearec",
    "HLLM": "hllm", "HLLMConfig": "hllm", "HCN": "hcn", "HCNConfig": "hcn",
}
MODEL_KINDS = {"sasrec": "SASRec", "rearec": "ReaRec", "hllm": "HLLM", "hcn": "HCN"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"rankwise.recsys.{_HOME[name]}"), name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")


def load_recommender(directory: str | Path) -> Any:
    """Load any recommender directory by the ``kind`` in its ``rankwise.json``."""
    from rankwise.core.model_dir import read_rankwise_json

    kind = read_rankwise_json(directory, tuple(MODEL_KINDS))["kind"]
    return __getattr__(MODEL_KINDS[kind]).from_pretrained(directory)
