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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from rankwise.core.outputs import OutputError, check_output, write_atomic

__all__ = ["sha256_file", "job_lock", "writing", "write_parquet_atomic", "chunk_done"]


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
