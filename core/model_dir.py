"""Model directories: HF config + safetensors + ``rankwise.json`` (kind, max length, extras).

Every trainable rankwise model saves as such a directory; loaders and the ONNX exporter read the
``kind`` field to know what they hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RANKWISE_JSON", "write_rankwise_json", "read_rankwise_json", "ModelDirError"]

RANKWISE_JSON = "rankwise.json"


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or of the wrong kind."""


def write_rankwise_json(directory: str | Path, kind: str, **fields: Any) -> Path:
    """Write ``rankwise.json`` atomically into ``directory`` with ``kind`` and ``fields``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        rw_version = version("rankwise")
    except PackageNotFoundError:
        rw_version = "unknown"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RANKWISE_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"kind": kind, "rankwise_version": rw_version, **fields}, indent=1))
    os.replace(tmp, path)
    return path


def read_rankwise_json(directory: str | Path, expected_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read ``rankwise.json``; raise :class:`ModelDirError` naming the file when it is absent or bad."""
    path = Path(directory) / RANKWISE_JSON
    if not Path(directory).is_dir():
        raise ModelDirError(f"{directory}: not a model directory (it does not exist)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing; not a rankwise model directory")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ModelDirError(f"{path}: field 'kind' is missing")
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if meta["kind"] not in kinds:
            raise ModelDirError(f"{path}: kind is {meta['kind']!r}, expected one of {list(kinds)}")
    return meta
