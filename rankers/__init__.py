"""Rerankers and the one loader for any saved model directory: :func:`load_ranker`.

Each model kind registers ``kind -> "module:Class"`` in :data:`RANKER_KINDS`; the class has a
``from_pretrained(dir)`` classmethod. ``rankwise.json``'s ``kind`` field picks the class, so eval,
serving and the CLI load any trained reranker the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rankwise.rankers.base import Ranker

__all__ = ["RANKER_KINDS", "register_ranker", "load_ranker"]

RANKER_KINDS: dict[str, str] = {
    "cross-encoder": "rankwise.rankers.cross_encoder:CrossEncoder",
    "bi-encoder": "rankwise.rankers.bi_encoder_ranker:TrainableBiEncoder",
    "erank": "rankwise.rankers.erank:ERankRanker",
    "listwise": "rankwise.rankers.listwise:ListwiseRanker",
    "iranker": "rankwise.rankers.iranker:IRanker",
}


def register_ranker(kind: str, target: str) -> None:
    """Register ``kind`` (the ``rankwise.json`` field) as ``"package.module:Class"``."""
    if ":" not in target:
        raise ValueError(f"register_ranker: target must be 'module:Class', got {target!r}")
    RANKER_KINDS[kind] = target


def load_ranker(dir_or_name: str | Path, **kwargs) -> Ranker:
    """Load the ranker saved in ``dir_or_name`` (dispatch on ``rankwise.json`` ``kind``).

    Raises :class:`rankers.model_dir.ModelDirError` naming the file when the directory is missing,
    has no ``rankwise.json``, or holds an unregistered kind.
    """
    from rankwise.core.model_dir import ModelDirError, read_rankwise_json

    meta = read_rankwise_json(dir_or_name)
    kind = meta["kind"]
    if kind not in RANKER_KINDS:
        raise ModelDirError(f"{Path(dir_or_name) / 'rankwise.json'}: unknown kind {kind!r}; known: {sorted(RANKER_KINDS)}")
    module, cls = RANKER_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls).from_pretrained(dir_or_name, **kwargs)
