"""One rule for everything a command writes: never replace an existing output unless asked, and
never leave a half-written one.

* :func:`check_output` is called by every writing command before any work starts: an output that
  already exists is refused (:class:`OutputError`, one line naming the path) unless the caller passed
  ``overwrite`` (``--overwrite``); a file where a directory is expected (or the reverse) is always refused.
* :func:`atomic_file` / :func:`write_atomic` write a file as a temporary sibling, fsync it and rename
  it into place, so readers see the old file or the new one, never a prefix.
* :func:`atomic_dir` builds a directory (a model, an export) in a staging sibling and renames it into
  place only once everything inside is written; on an error the staging directory is removed and an
  earlier output is left untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

__all__ = ["OutputError", "OVERWRITE_HELP", "check_output", "atomic_file", "write_atomic", "atomic_dir"]

OVERWRITE_HELP = "Replace outputs that already exist (refused otherwise); the new output is written atomically."


class OutputError(FileExistsError, ValueError):
    """An output path already holds something the command would replace (the message names it).

    A :class:`FileExistsError` (what it is) and a :class:`ValueError` (what every command reports as
    a one-line error), like :class:`io.UnsupportedOperation`.
    """


def check_output(
    path: str | Path,
    overwrite: bool,
    kind: Literal["file", "dir"] = "file",
    contents: Sequence[str] | None = None,
    reason: str = "",
) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; return ``path``.

    Args:
        path: the output file or directory.
        overwrite: the caller's ``--overwrite``: an existing output of the right kind may be replaced.
        kind: ``"file"`` (an existing directory there is always refused) or ``"dir"`` (an existing
            file there is always refused; an empty directory is not an output yet).
        contents: for a directory shared with other files (``eval --output-dir``): the names the
            command writes inside it; only those count as existing outputs. ``None``: any entry.
        reason: appended to the refusal (why the output is not simply continued, e.g. for ``--resume``).

    Raises:
        OutputError: one line naming ``path`` and what to pass.
    """
    path = Path(path)
    why = f" {reason}" if reason else ""
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"{path}: cannot be created, {parent} is a file")
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory (the output here is a directory){why}")
        if path.is_dir() and not overwrite:
            taken = sorted(n for n in contents if (path / n).exists()) if contents is not None else (
                [p.name for p in sorted(path.iterdir())])
            if taken:
                shown = ", ".join(taken[:3]) + (", ..." if len(taken) > 3 else "")
                raise OutputError(f"{path}: already holds outputs ({shown}){why}; pass --overwrite to replace them")
        return path
    if path.is_dir():
        raise OutputError(f"{path}: exists and is a directory (the output here is a file){why}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists{why}; pass --overwrite to replace it")
    return path


def _staging(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{what}")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On an error the temporary file is removed and ``path`` is untouched.

    Example:
        >>> with atomic_file("run.trec") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("q1 Q0 d1 1 1.0 rankwise\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging(path, "tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`; return ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``; on success it becomes ``path``.

    A missing or empty ``path`` is replaced in one ``rename``. An existing non-empty ``path`` (which
    the caller was allowed to replace, see :func:`check_output`) is first renamed aside, then the
    staging directory renamed into place, then the old one deleted: a reader sees the old directory
    or the new one, complete (or, for the instant between the two renames, none). On an error the
    staging directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(path, "partial")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, path)  # replaces a missing or empty directory atomically
    except OSError:
        if not path.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = _staging(path, "old")
        os.rename(path, old)
        os.rename(staging, path)
        shutil.rmtree(old, ignore_errors=True)
