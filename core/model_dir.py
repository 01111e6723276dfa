"""Model directories: HF config + safetensors + ``rankwise.json`` (kind, max length, extras).

Every trainable rankwise model saves as such a directory; loaders and the ONNX exporter read the
``kind`` field to know what they hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["RANKWISE_JSON", "write_rankwise_json", "read_rankwise_json", "ModelDirError", "caller_trust_only",
           "fingerprint_model_dir"]

log = logging.getLogger("rankwise")

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


def read_json_fields(path: Path, required: tuple[str, ...], missing: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a model directory's metadata file) with the ``required`` fields;
    :class:`ModelDirError` naming the directory or file otherwise (``missing`` says what an absent file means)."""
    if not path.parent.is_dir():
        raise ModelDirError(f"{path.parent}: not a model directory (it does not exist)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing; {missing}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{path}: not valid JSON ({err})") from None
    for key in required:
        if not isinstance(doc, dict) or key not in doc:
            raise ModelDirError(f"{path}: field {key!r} is missing")
    return doc


def read_rankwise_json(directory: str | Path, expected_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read ``rankwise.json``; raise :class:`ModelDirError` naming the file when it is absent or bad."""
    path = Path(directory) / RANKWISE_JSON
    meta = read_json_fields(path, ("kind",), "not a rankwise model directory")
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if meta["kind"] not in kinds:
            raise ModelDirError(f"{path}: kind is {meta['kind']!r}, expected one of {list(kinds)}")
    return meta


def caller_trust_only(fields: dict[str, Any], source: str | Path, trust_remote_code: bool) -> dict[str, Any]:
    """``fields`` with ``trust_remote_code`` set to the caller's choice, never the directory's.

    A model directory is untrusted input: its ``rankwise.json`` may ask for ``trust_remote_code``
    (code shipped in the directory, run by transformers on load), but only the caller can grant it.
    When the directory asks and the caller did not consent, one warning naming ``source`` is logged
    and the model loads with it off.
    """
    out = dict(fields)
    if out.pop("trust_remote_code", False) and not trust_remote_code:
        log.warning("rankwise: %s asks for trust_remote_code; loading with it off (only the caller may turn it on: "
                    "trust_remote_code=True / --trust-remote-code)", source)
    out["trust_remote_code"] = bool(trust_remote_code)
    return out


def fingerprint_model_dir(directory: str | Path) -> str:
    """A sha256 over every file of a model directory: relative path, size and mtime (ns) of each.

    Covers weights (safetensors, ONNX graphs and their external data, item vectors), tokenizers and
    metadata, so a job keyed by it cannot resume against retrained weights written into the same
    directory. Size + mtime (not a content hash) keeps it cheap for multi-GB weights.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
