"""TREC run files (``qid Q0 docid rank score tag``) and parquet candidate sets, read and written safely."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from rankwise.core.io import DatasetError
from rankwise.eval.candidate_check import check_candidates
from rankwise.rankers.base import CANDIDATE_SCHEMA, rank_by_score

__all__ = ["read_trec_run", "write_trec_run", "read_candidates", "write_candidates"]


def read_trec_run(path: str | Path) -> pl.DataFrame:
    """Read a TREC run as a candidate set; a malformed line raises naming ``file:line``."""
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 6:
                    raise DatasetError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {len(parts)} fields")
                try:
                    rows.append((parts[0], parts[2], float(parts[4]), int(parts[3])))
                except ValueError:
                    raise DatasetError(f"{path}:{lineno}: rank or score is not a number") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not valid UTF-8 ({err.reason})") from None
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    if not rows:
        raise DatasetError(f"{path}: empty run file")
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA, orient="row")


def write_trec_run(candidates: pl.DataFrame, path: str | Path, tag: str = "rankwise") -> Path:
    """Write a candidate set as a TREC run (re-ranked by score), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranked = rank_by_score(candidates)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for qid, docid, score, rank in ranked.iter_rows():
            out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, path)
    return path


def read_candidates(path: str | Path) -> pl.DataFrame:
    """A candidate set from a TREC run, parquet or jsonl file (by extension).

    The file is checked first (:func:`~rankwise.eval.candidate_check.check_candidates`): malformed
    lines, null/NaN scores and duplicate ``(qid, docid)`` pairs are errors naming the file and line.
    """
    path = Path(path)
    check_candidates(path)
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        try:
            frame = pl.read_ndjson(path)
        except Exception as err:  # polars raises several error types for bad JSON
            raise DatasetError(f"{path}: malformed JSON lines ({str(err).splitlines()[0]})") from None
    else:
        return read_trec_run(path)
    missing = [c for c in ("qid", "docid", "score") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    if "rank" not in frame.columns:
        frame = frame.with_columns(pl.lit(0).alias("rank"))
    return rank_by_score(frame.select(list(CANDIDATE_SCHEMA)).cast(CANDIDATE_SCHEMA))


def write_candidates(candidates: pl.DataFrame, path: str | Path) -> Path:
    """Write a candidate set as parquet, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    candidates.write_parquet(tmp)
    os.replace(tmp, path)
    return path
