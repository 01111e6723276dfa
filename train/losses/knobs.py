"""An objective's knobs from ``KEY=VALUE`` strings (the CLI's ``--objective-arg``), checked against its constructor."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["objective_kwargs"]


def objective_kwargs(cls: type, items: Sequence[str]) -> dict[str, Any]:
    """``["temperature=0.5"]`` -> ``{"temperature": 0.5}`` for ``cls(**kwargs)``.

    Each key must be a parameter of ``cls.__init__``; each value is converted to the parameter's
    annotated type (``float``, ``int``, ``bool``, ``str``, a ``Literal`` of strings, or any of these
    ``| None``, where ``none`` gives ``None``). Raises ``ValueError`` with a one-line message naming
    the item on an unknown key, a repeated key or a value of the wrong type.
    """
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
              if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = typing.get_type_hints(cls.__init__)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        if key not in params:
            known = ", ".join(params) or "none"
            raise ValueError(f"{item!r}: {cls.__name__} has no knob {key!r} (its knobs: {known})")
        if key in out:
            raise ValueError(f"{item!r}: {key} given twice")
        out[key] = _convert(text.strip(), hints.get(key, type(params[key].default)), item)
    return out


def _convert(text: str, hint: Any, item: str) -> Any:
    """``text`` as a value of type ``hint``; ``ValueError`` naming ``item`` when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() == "none":
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(text, option, item)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{item!r}: not one of {options}")
    if origin is typing.Literal:
        if text not in args:
            raise ValueError(f"{item!r}: choose one of {', '.join(map(str, args))}")
        return text
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{item!r}: expected true or false")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"{item!r}: expected {'an integer' if hint is int else 'a number'}") from None
    if hint is str:
        return text
    raise ValueError(f"{item!r}: a knob of type {hint} cannot be set from the command line")
