"""Calibration pairs for post-training quantisation: traffic like the served queries, none of them.

:func:`bm25_calibration_pairs` takes the first ``n_queries`` judged queries of a BEIR split (use a
split that is not evaluated, e.g. ``train``) with their BM25 top-``top_k`` documents, as the
``(query, document)`` pairs that ``export_model(..., calibration_pairs=...)`` and
``rankwise export --calibration`` expect.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bm25_calibration_pairs", "read_pairs_file"]


def bm25_calibration_pairs(dataset: str | Path, n_queries: int = 16, top_k: int = 32, split: str = "train",
                           data_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """``n_queries x top_k`` (query, document text) pairs. Shapes: a list of ``n_queries * top_k`` pairs."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever

    ds = load_beir(dataset, split, data_dir=data_dir)
    docs = {d: ds.doc_text(d) for d in ds.corpus}
    qids = sorted(ds.qrels)[:n_queries]
    cands = BM25Retriever.from_corpus(docs).batch_search({q: ds.queries[q] for q in qids}, top_k)
    return [(ds.queries[q], docs[d]) for q, d in cands.select("qid", "docid").iter_rows()]


def read_pairs_file(path: str | Path) -> list[tuple[str, str]]:
    """``(query, doc)`` pairs from a ``.jsonl`` or ``.parquet`` file with string fields ``query`` and
    ``doc`` (the ``--calibration`` file of ``rankwise export``).

    Raises:
        ValueError: unreadable file, another suffix, a missing field or an empty string, naming the
            file (and the 1-based line of a ``.jsonl``).
    """
    import polars as pl

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            raise ValueError(f"{path}: expected a .jsonl or .parquet file of (query, doc) pairs")
    except (OSError, pl.exceptions.PolarsError) as err:
        raise ValueError(f"{path}: cannot read (query, doc) pairs: {str(err).splitlines()[0]}") from None
    missing = [c for c in ("query", "doc") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: field(s) {missing} missing (each pair needs 'query' and 'doc')")
    frame = frame.select(pl.col("query").cast(pl.String), pl.col("doc").cast(pl.String)).with_row_index("line", offset=1)
    bad = frame.filter(pl.col("query").fill_null("").str.strip_chars().eq("") | pl.col("doc").fill_null("").str.strip_chars().eq(""))
    if bad.height:
        where = f"line {bad['line'][0]}" if path.suffix == ".jsonl" else f"row {bad['line'][0]}"
        raise ValueError(f"{path}: {where}: empty 'query' or 'doc'")
    return list(zip(frame["query"].to_list(), frame["doc"].to_list()))
