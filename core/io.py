"""Strict readers for the line formats datasets ship in: every error names the file and line."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

__all__ = ["parse_json_object", "DatasetError", "read_jsonl", "read_qrels_tsv", "find_file", "iter_lines", "id_field",
           "text_field"]


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the file (and line) at fault."""


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``; a :class:`DatasetError` when neither exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{folder / stem}: file not found (nor {stem}.gz)")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    r"""Yield ``(line_number, text)`` of a UTF-8 file (``.gz`` decompressed), lines ending in ``"\n"``.

    Lines are decoded one at a time, so bad UTF-8 is reported with its line number and its byte
    offset in the (decompressed) file, not the offset inside a decoder buffer. ``"\r\n"`` reads as ``"\n"``.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DatasetError(
                        f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {offset + err.start} of the file)"
                    ) from None
                offset += len(raw)
                yield lineno, line[:-2] + "\n" if line.endswith("\r\n") else line
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: cannot be read ({err})") from None


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; every record must hold ``required``."""
    seen = False
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        record = parse_json_object(line, f"{path}:{lineno}")
        missing = [f for f in required if f not in record]
        if missing:
            raise DatasetError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        seen = True
        yield lineno, record
    if not seen:
        raise DatasetError(f"{path}: empty file")


def read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    """Read a ``query-id corpus-id [score]`` TSV (header optional; a missing score means 1).

    A grade that is not an integer (``1.5``, ``inf``, ``x``) or a second judgement of the same
    ``(query-id, corpus-id)`` is a :class:`DatasetError` naming the file and line.
    """
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        parts = line.rstrip("\n").split("\t")
        if not line.strip() or (lineno == 1 and parts[0] in ("query-id", "qid", "query_id")):
            continue
        if len(parts) not in (2, 3):
            raise DatasetError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id[<TAB>score]', got {len(parts)} fields")
        try:
            value = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: score {parts[2]!r} is not a number") from None
        if not math.isfinite(value) or not value.is_integer():
            raise DatasetError(f"{path}:{lineno}: score {parts[2]!r} is not an integer grade")
        judged = qrels.setdefault(parts[0], {})
        if parts[1] in judged:
            raise DatasetError(f"{path}:{lineno}: duplicate judgement (query-id {parts[0]!r}, corpus-id {parts[1]!r})")
        judged[parts[1]] = int(value)
    if not qrels:
        raise DatasetError(f"{path}: empty file")
    return qrels


def parse_json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; :class:`DatasetError` naming ``where`` (``file:line``) otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: malformed JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object")
    return record


def id_field(record: dict, names: tuple[str, ...], where: str) -> str:
    """The id under the first of ``names`` in ``record``, as a string.

    An id must be a JSON string or integer: ``null``, a boolean, a float, a list or an object is a
    :class:`DatasetError` naming ``where`` (``file:line``) and the field, as is a record without any of ``names``.
    """
    for name in names:
        if name in record:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DatasetError(f"{where}: field {name!r} is {json.dumps(value)}, not a string or integer id")
            return str(value)
    raise DatasetError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")


def text_field(record: dict, name: str, where: str) -> str:
    """``record[name]`` as text: a string, or ``""`` when absent or ``null``; any other JSON type is a
    :class:`DatasetError` naming ``where`` and the field."""
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {name!r} is {json.dumps(value)}, not a string")
    return value
