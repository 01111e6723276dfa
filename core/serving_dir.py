"""An ONNX export directory's ``serving.json``: what the runtime needs to serve it (kind, task,
graph file, inputs and output, max length, score mapping, precision, parity)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankwise.core.model_dir import ModelDirError

__all__ = ["SERVING_JSON", "read_serving_json"]

SERVING_JSON = "serving.json"


def read_serving_json(directory: str | Path) -> dict[str, Any]:
    """Read an export's ``serving.json``; :class:`ModelDirError` naming the file when absent or bad."""
    directory = Path(directory)
    path = directory / SERVING_JSON
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a model directory (it does not exist)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing; not an ONNX export of rankwise")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from None
    for key in ("kind", "onnx_file", "inputs", "output"):
        if not isinstance(doc, dict) or key not in doc:
            raise ModelDirError(f"{path}: field {key!r} is missing")
    return doc
