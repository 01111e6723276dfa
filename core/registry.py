"""One registry of model kinds: the ``kind`` of a ``rankwise.json`` → its PyTorch class, its task
and its export graph builders.

Every loader (:func:`rankwise.rankers.load_ranker`, :func:`rankwise.recsys.load_recommender`,
:class:`rankwise.serving.api.Reranker` / ``Recommender``) and the ONNX exporter
(:func:`rankwise.serving.export.export_model`) read this table, so adding a model kind touches this
registry (or one :func:`register` call) and the model's own module, nothing else. Targets are
``"package.module:name"`` strings, imported on first use, so the ground floor imports nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ModelKind", "register", "model_kind", "kinds", "load_target"]

Task = Literal["rerank", "recommend"]


@dataclass(frozen=True)
class ModelKind:
    """A model kind.

    Attributes:
        name: the ``kind`` field of ``rankwise.json``.
        model: ``"module:Class"`` with ``from_pretrained(directory)``.
        task: ``rerank`` (query, documents → scores) or ``recommend`` (history → items).
        export: ``"module:builder"`` of the ONNX graph (``None``: not exportable).
        item_tower: ``"module:builder"`` of a separate item-tower graph (HLLM), if any.
    """

    name: str
    model: str
    task: Task
    export: str | None = None
    item_tower: str | None = None

    def __post_init__(self) -> None:
        for field_name in ("model", "export", "item_tower"):
            target = getattr(self, field_name)
            if target is not None and target.count(":") != 1:
                raise ValueError(f"ModelKind {self.name!r}: {field_name} must be 'module:name', got {target!r}")
        if self.task not in ("rerank", "recommend"):
            raise ValueError(f"ModelKind {self.name!r}: task must be 'rerank' or 'recommend', got {self.task!r}")


_GRAPHS = "rankwise.serving.graphs"
_KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("cross-encoder", "rankwise.rankers.cross_encoder:CrossEncoder", "rerank", f"{_GRAPHS}:cross_encoder_graph"),
    ModelKind("bi-encoder", "rankwise.rankers.bi_encoder_ranker:TrainableBiEncoder", "rerank", f"{_GRAPHS}:bi_encoder_graph"),
    ModelKind("erank", "rankwise.rankers.erank:ERankRanker", "rerank", f"{_GRAPHS}:erank_graph"),
    ModelKind("listwise", "rankwise.rankers.listwise:ListwiseRanker", "rerank"),
    ModelKind("iranker", "rankwise.rankers.iranker:IRanker", "rerank"),
    ModelKind("sasrec", "rankwise.recsys.sasrec:SASRec", "recommend", f"{_GRAPHS}:user_tower_graph"),
    ModelKind("rearec", "rankwise.recsys.rearec:ReaRec", "recommend", f"{_GRAPHS}:user_tower_graph"),
    ModelKind("rearec-hstu", "rankwise.recsys.rearec:ReaRecHSTU", "recommend", f"{_GRAPHS}:user_tower_graph"),
    ModelKind("hllm", "rankwise.recsys.hllm:HLLM", "recommend", f"{_GRAPHS}:user_tower_graph", f"{_GRAPHS}:hllm_item_tower_graph"),
    ModelKind("hcn", "rankwise.recsys.hcn:HCN", "recommend", f"{_GRAPHS}:user_tower_graph"),
    ModelKind("hstu", "rankwise.recsys.hstu:HSTU", "recommend", f"{_GRAPHS}:user_tower_graph"),
)}


def register(kind: ModelKind) -> None:
    """Add (or replace) a model kind."""
    _KINDS[kind.name] = kind


def model_kind(name: str) -> ModelKind:
    """The registered kind ``name``; ``KeyError`` naming the known kinds otherwise."""
    if name not in _KINDS:
        raise KeyError(f"unknown model kind {name!r}; known: {sorted(_KINDS)}")
    return _KINDS[name]


def kinds(task: Task | None = None) -> dict[str, ModelKind]:
    """Every registered kind, or those of one task."""
    return {n: k for n, k in _KINDS.items() if task is None or k.task == task}


def load_target(target: str) -> Any:
    """Import ``"module:name"`` and return the object."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
