"""An ONNX export directory's ``serving.json``: what the runtime needs to serve it (kind, task,
graph file, inputs and output, max length, score mapping, precision, parity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankwise.core.model_dir import read_json_fields

__all__ = ["SERVING_JSON", "read_serving_json"]

SERVING_JSON = "serving.json"


def read_serving_json(directory: str | Path) -> dict[str, Any]:
    """Read an export's ``serving.json``; :class:`ModelDirError` naming the file when absent or bad."""
    return read_json_fields(Path(directory) / SERVING_JSON, ("kind", "onnx_file", "inputs", "output"),
                            "not an ONNX export of rankwise")
