"""Strict check of a first-stage candidate file (TREC run, ``.jsonl``, ``.parquet``) before it is ranked.

A candidate file is the first stage's output and a reranker's input, so anything that would silently
change which documents are kept is an error naming the file and line (the row for parquet):

* a TREC line without exactly 6 fields, or a rank that is not an integer, or a score that is not a number;
* a jsonl line that is not a JSON object with ``qid``, ``docid`` and ``score``;
* a ``null``, NaN or infinite score: it would sort first (or last) by accident when ranks are derived
  from scores, so it is rejected rather than guessed;
* the same ``(qid, docid)`` twice: it would be reranked and written twice.
"""

from __future__ import annotations

import math
from pathlib import Path

from rankwise.core.io import DatasetError, iter_lines, parse_json_object

__all__ = ["check_candidates"]


def check_candidates(path: str | Path) -> int:
    """Check a candidate file; return its number of candidates, or raise :class:`DatasetError`.

    The file is read once, streamed (TREC and jsonl) or by columns (parquet). TREC lines are split on
    the separator of the first line (tab if it holds one, else a single space), as the batch reader does.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if path.suffix == ".parquet":
        return _check_parquet(path)
    jsonl = path.suffix in (".jsonl", ".ndjson")
    seen: set[tuple[str, str]] = set()
    sep: str | None = None
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if jsonl:
            qid, docid, score = _jsonl_fields(line, where)
        else:
            sep = sep or ("\t" if "\t" in line else " ")
            qid, docid, score = _trec_fields(line.rstrip("\n"), sep, where)
        if (qid, docid) in seen:
            raise DatasetError(f"{where}: duplicate candidate (qid {qid!r}, docid {docid!r})")
        seen.add((qid, docid))
    if not seen:
        raise DatasetError(f"{path}: no candidates")
    return len(seen)


def _finite(score: float, where: str, shown: str) -> float:
    if math.isnan(score) or math.isinf(score):
        raise DatasetError(f"{where}: field 'score' is {shown}, not a finite number")
    return score


def _trec_fields(line: str, sep: str, where: str) -> tuple[str, str, float]:
    parts = line.split(sep)
    if len(parts) != 6:
        raise DatasetError(f"{where}: expected a TREC run line of 6 fields 'qid Q0 docid rank score tag', got {len(parts)} fields")
    try:
        int(parts[3])
    except ValueError:
        raise DatasetError(f"{where}: field 'rank' is {parts[3]!r}, not an integer") from None
    try:
        score = float(parts[4])
    except ValueError:
        raise DatasetError(f"{where}: field 'score' is {parts[4]!r}, not a number") from None
    _finite(score, where, repr(parts[4]))
    return parts[0], parts[2], score


def _jsonl_fields(line: str, where: str) -> tuple[str, str, float]:
    record = parse_json_object(line, where)
    for name in ("qid", "docid", "score"):
        if record.get(name) is None:
            raise DatasetError(f"{where}: field {name!r} is {'null' if name in record else 'missing'}")
    score = record["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise DatasetError(f"{where}: field 'score' is {score!r}, not a number")
    if "rank" in record and (isinstance(record["rank"], bool) or not isinstance(record["rank"], int)):
        raise DatasetError(f"{where}: field 'rank' is {record['rank']!r}, not an integer")
    return str(record["qid"]), str(record["docid"]), _finite(float(score), where, repr(score))


def _check_parquet(path: Path) -> int:
    import polars as pl

    try:
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
    except pl.exceptions.PolarsError as err:
        raise DatasetError(f"{path}: cannot be read as parquet ({str(err).splitlines()[0]})") from None
    missing = [c for c in ("qid", "docid", "score") if c not in names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        frame = lf.select(pl.col("qid").cast(pl.String), pl.col("docid").cast(pl.String),
                          pl.col("score").cast(pl.Float64)).with_row_index("row").collect()
    except pl.exceptions.PolarsError as err:
        raise DatasetError(f"{path}: column 'score' is not numeric ({str(err).splitlines()[0]})") from None
    for name in ("qid", "docid", "score"):
        bad = frame.filter(pl.col(name).is_null() | (pl.col(name).is_nan() if name == "score" else pl.lit(False)))
        if bad.height:
            row = bad.row(0, named=True)
            shown = "null" if row[name] is None else row[name]
            raise DatasetError(f"{path}: row {row['row']}: field {name!r} is {shown}, not a finite value")
    dup = frame.filter(pl.struct("qid", "docid").is_duplicated())
    if dup.height:
        row = dup.row(1 if dup.height > 1 else 0, named=True)
        raise DatasetError(f"{path}: row {row['row']}: duplicate candidate (qid {row['qid']!r}, docid {row['docid']!r})")
    if not frame.height:
        raise DatasetError(f"{path}: no candidates")
    return frame.height
