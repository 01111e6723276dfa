"""Chunked, resumable output of batch jobs: one exclusive job per output, atomic chunk files with
their sha256 in a manifest, one-line errors for failed writes.

Shared by the batch reranker (``serving/batch.py``) and the all-users recommendation export
(``recsys/batch_predict.py``): a chunk is done when its manifest entry names that very file and the
file's sha256 matches; anything else is redone on resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from rankwise.core.io import DatasetError
from rankwise.core.outputs import OutputError, check_output, write_atomic

MANIFEST = "manifest.json"  # in OUTPUT.parts/: the job key and the finished chunks

__all__ = ["MANIFEST", "ChunkedOutput", "open_manifest", "manifest_problem", "sha256_file", "job_lock", "writing", "write_parquet_atomic", "chunk_done"]


class ChunkedOutput:
    """Where a chunked job keeps its parts and its lock, beside its ``output`` file (a mixin of the job
    configs: ``OUTPUT.parts/`` holds the finished chunks and their manifest, ``OUTPUT.lock`` the job lock)."""

    output: Path
    resume: bool
    overwrite: bool

    @property
    def parts_dir(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")

    @property
    def lock_file(self) -> Path:
        return self.output.with_name(self.output.name + ".lock")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def job_lock(output: Path, lock_file: Path) -> Iterator[None]:
    """Hold ``lock_file`` (exclusive, non-blocking ``flock``) for the whole job writing ``output``.

    A second job on the same output is refused (:class:`~rankwise.core.outputs.OutputError`, one line
    naming the lock) rather than writing the same chunk files and manifest at once. The kernel frees
    the lock when the job ends, however it ends (``kill -9`` included). The lock file itself stays:
    deleting it would let a third job lock a new file while the second still holds the old one.
    """
    check_output(output, True, "file")  # a directory there, or a file above it: refused before anything is made
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{lock_file}: another job is writing {output} (it holds this lock); "
                              "wait for it to end, or stop it and continue with resume") from None
        yield


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Report a failed write (a full disk, a quota) as one ``OSError`` line naming ``path``."""
    try:
        yield
    except OSError as err:
        if isinstance(err, FileExistsError):
            raise
        raise OSError(err.errno, f"{path}: cannot write ({err.strerror or err}); what was written before is kept, "
                                 "continue with resume once the problem is fixed") from None


def write_parquet_atomic(frame: pl.DataFrame, file: Path) -> None:
    """Write one chunk file atomically; the parquet bytes are built in memory first, so a full disk
    is a plain ``OSError`` (not a polars error) and no partial file is left behind."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_atomic(file, buffer.getvalue())


def chunk_done(parts: Path, entry: dict[str, Any] | None, name: str) -> bool:
    """Chunk ``name`` is done: its manifest entry names that very file, whose sha256 matches."""
    if not entry or entry["file"] != name:
        return False
    file = parts / name
    return file.is_file() and sha256_file(file) == entry["sha256"]


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a manifest's shape (``None`` when it is a job manifest)."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    for name in ("key", "chunks"):
        if not isinstance(manifest.get(name), dict):
            return f"field {name!r} is missing or not an object"
    for index, entry in manifest["chunks"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("rows"), int) and Path(entry["file"]).name == entry["file"]):
            return f"chunk {index!r} is not {{file, sha256, rows}}"
    return None


def open_manifest(config: ChunkedOutput, key: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """The manifest a chunked job writes into: the earlier job's (``config.resume``, checked to have the
    same ``key``), else ``{"key": key, "chunks": {}, **fresh}``. Refuses (one line) parts left by an
    earlier job unless resuming or overwriting, an existing output unless overwriting, a corrupt
    manifest and a changed job; ``config.overwrite`` removes the earlier parts and output."""
    parts, path = config.parts_dir, config.parts_dir / MANIFEST
    if path.is_file() and not (config.resume or config.overwrite):
        raise OutputError(f"{parts}: an earlier job's parts are here; pass resume to continue it or overwrite to start over")
    check_output(config.output, config.overwrite or (config.resume and path.is_file()), "file",
                 reason=f"and --resume found no earlier job ({path} is missing)" if config.resume else "")
    if config.overwrite:
        shutil.rmtree(parts, ignore_errors=True)
        config.output.unlink(missing_ok=True)
    if config.resume and path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DatasetError(f"{path}: corrupt manifest; start over with overwrite") from None
        problem = manifest_problem(manifest)
        if problem:
            raise DatasetError(f"{path}: corrupt manifest ({problem}); start over with overwrite")
        changed = [k for k, v in key.items() if manifest["key"].get(k) != v]
        if changed:
            raise DatasetError(f"{path}: the job changed since it was started ({', '.join(changed)}); start over with overwrite")
        return manifest
    return {"key": key, "chunks": {}, **fresh}
