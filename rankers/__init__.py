"""Rerankers and the one loader for any saved model directory: :func:`load_ranker`.

Each model kind is registered in :mod:`rankwise.core.registry` (``kind -> "module:Class"``, task
``rerank``); the class has a ``from_pretrained(dir)`` classmethod. ``rankwise.json``'s ``kind`` field picks the class, so eval,
serving and the CLI load any trained reranker the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rankwise.rankers.base import Ranker

__all__ = ["RANKER_KINDS", "register_ranker", "load_ranker"]

class _RankerKinds(dict):
    """``kind -> "module:Class"`` of every reranker kind, read from the registry at each access."""

    def _view(self) -> dict[str, str]:
        from rankwise.core.registry import kinds

        return {n: k.model for n, k in kinds("rerank").items()}

    def __getitem__(self, kind: str) -> str:
        return self._view()[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._view()

    def __iter__(self):  # noqa: ANN204
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def keys(self):  # noqa: ANN201
        return self._view().keys()

    def items(self):  # noqa: ANN201
        return self._view().items()

    def values(self):  # noqa: ANN201
        return self._view().values()

    def __repr__(self) -> str:
        return repr(self._view())


RANKER_KINDS: dict[str, str] = _RankerKinds()
"""A read-only view of the registry's reranker kinds (``kind -> "module:Class"``)."""


def register_ranker(kind: str, target: str, export: str | None = None) -> None:
    """Register ``kind`` (the ``rankwise.json`` field) as ``"package.module:Class"`` (+ its ONNX graph builder)."""
    from rankwise.core.registry import ModelKind, register

    if ":" not in target:
        raise ValueError(f"register_ranker: target must be 'module:Class', got {target!r}")
    register(ModelKind(kind, target, "rerank", export))


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
    from rankwise.core.registry import load_target

    return load_target(RANKER_KINDS[kind]).from_pretrained(dir_or_name, **kwargs)
