"""Where datasets live: ``$RANKWISE_DATA``, else the checkout's ``../shared/data``, else a user cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "cache_dir"]

_REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$RANKWISE_DATA`` when set; else ``<repo>/../shared/data`` when it exists; else the cache."""
    env = os.environ.get("RANKWISE_DATA")
    if env:
        return Path(env).expanduser()
    shared = _REPO.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return cache_dir() / "datasets"


def cache_dir() -> Path:
    """``$RANKWISE_CACHE`` or ``~/.cache/rankwise``: indexes, encoded vectors, downloads."""
    path = Path(os.environ.get("RANKWISE_CACHE", Path.home() / ".cache" / "rankwise")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
