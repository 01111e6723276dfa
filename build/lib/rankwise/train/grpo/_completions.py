"""Shared helpers of the reward functions: completion text in both TRL forms."""

from __future__ import annotations

from typing import Any

__all__ = ["completion_text"]


def completion_text(completion: Any) -> str:
    """The text of a completion given as a plain string or in chat form (a list of messages).

    Example:
        >>> completion_text("7"), completion_text([{"role": "assistant", "content": "7"}])
        ('7', '7')
    """
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
