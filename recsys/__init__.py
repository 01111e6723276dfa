"""Sequential recommenders (SASRec, HSTU, ReaRec on either, HLLM, HCN-style) with one surface and full-ranking evaluation.

Names are imported lazily so that ``rankwise --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = [
    "SASRec", "SASRecConfig", "HSTU", "HSTUConfig", "ReaRec", "ReaRecConfig", "ReaRecHSTU", "ReaRecHSTUConfig", "HLLM", "HLLMConfig", "HCN", "HCNConfig",
    "MODEL_KINDS", "load_recommender", "build_recommender",
]

_HOME = {
    "SASRec": "sasrec", "SASRecConfig": "sasrec", "HSTU": "hstu", "HSTUConfig": "hstu", "ReaRec": "rearec", "ReaRecConfig": "rearec",
    "ReaRecHSTU": "rearec", "ReaRecHSTUConfig": "rearec",
    "HLLM": "hllm", "HLLMConfig": "hllm", "HCN": "hcn", "HCNConfig": "hcn",
}
def _model_kinds() -> dict[str, str]:
    from rankwise.core.registry import kinds

    return {n: k.model.split(":")[1] for n, k in kinds("recommend").items()}


MODEL_KINDS = _model_kinds()
"""``kind -> class name`` of the recommender kinds of :mod:`rankwise.core.registry`."""


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"rankwise.recsys.{_HOME[name]}"), name)
    raise AttributeError(f"module 'recsys' has no attribute {name!r}")


def load_recommender(directory: str | Path, trust_remote_code: bool = False) -> Any:
    """Load any recommender directory by the ``kind`` in its ``rankwise.json``.

    ``trust_remote_code`` (off by default) lets transformers run code shipped in the directory; the
    directory itself cannot turn it on (see ``SequentialRecommender.from_pretrained``).
    """
    from rankwise.core.model_dir import read_rankwise_json

    kind = read_rankwise_json(directory, tuple(MODEL_KINDS))["kind"]
    return __getattr__(MODEL_KINDS[kind]).from_pretrained(directory, trust_remote_code=trust_remote_code)


def build_recommender(kind: str, data: Any, **config: Any) -> Any:
    """A fresh recommender of ``kind`` (a key of :data:`MODEL_KINDS`) for ``data`` (a
    :class:`~rankwise.recsys.data.SequenceData`): ``config`` fills the family's config dataclass
    (``SASRecConfig``, ``ReaRecConfig``, ...) beside ``n_items``; HLLM also gets the item texts.
    The model's ``item_ids`` are the data's, so top-k maps back to dataset ids inside the model.

    Example:
        >>> net = build_recommender("rearec", data, hidden=64, n_layers=2, n_heads=1, objective="erl")  # doctest: +SKIP
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown recommender {kind!r}; choose one of {sorted(MODEL_KINDS)}")
    cls = __getattr__(MODEL_KINDS[kind])
    cfg = __getattr__(MODEL_KINDS[kind] + "Config")(n_items=data.n_items, **config)
    net = cls(cfg, item_texts=data.item_texts) if kind == "hllm" else cls(cfg)
    net.item_ids = data.item_ids
    return net
