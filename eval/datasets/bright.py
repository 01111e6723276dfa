"""BRIGHT (reasoning-intensive retrieval): queries, gold ids and excluded ids per domain.

The examples and qrels ship in ``$RANKWISE_DATA/bright/<domain>/``; the documents only exist on
the Hugging Face hub (``xlangai/BRIGHT``, configs ``documents`` / ``long_documents``). They are read
from a local file (jsonl / parquet with ``id`` and ``content``) when given or found beside the
examples, else fetched from the hub when online.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from rankwise.core.io import DatasetError, find_file, read_jsonl
from rankwise.core.paths import default_data_dir

__all__ = ["BrightDataset", "load_bright", "BRIGHT_DOMAINS"]

BRIGHT_DOMAINS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems",
)


@dataclass
class BrightDataset:
    """One BRIGHT domain.

    Attributes:
        corpus: ``docid -> text`` (``content``).
        queries: ``qid -> query``.
        qrels: ``qid -> {docid: 1}`` from ``gold_ids`` (``gold_ids_long`` in the long setting).
        excluded: ``qid -> docids`` to drop from the run before scoring, as BRIGHT does.
    """

    domain: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]]

    def doc_text(self, docid: str) -> str:
        return self.corpus[docid]


def _read_documents(path: Path) -> dict[str, str]:
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        missing = [c for c in ("id", "content") if c not in frame.columns]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
        return dict(zip(frame["id"].cast(pl.String).to_list(), frame["content"].to_list()))
    return {str(r["id"]): r["content"] for _, r in read_jsonl(path, ("id", "content"))}


def _hub_documents(domain: str, long: bool) -> dict[str, str]:
    try:
        from datasets import load_dataset

        rows = load_dataset("xlangai/BRIGHT", "long_documents" if long else "documents", split=domain)
    except Exception as err:  # offline, hub errors: all mean "not available here"
        raise DatasetError(
            f"BRIGHT {domain}: documents are not in the data folder and the hub (xlangai/BRIGHT) is not "
            f"reachable ({type(err).__name__}); pass --documents FILE (jsonl/parquet with id, content)"
        ) from None
    return {str(r["id"]): r["content"] for r in rows}


def load_bright(
    domain: str,
    data_dir: str | Path | None = None,
    documents: str | Path | None = None,
    long: bool = False,
) -> BrightDataset:
    """Load one BRIGHT domain.

    Args:
        domain: one of :data:`BRIGHT_DOMAINS`.
        data_dir: the data folder (default ``$RANKWISE_DATA``); reads ``bright/<domain>/examples.jsonl[.gz]``.
        documents: a jsonl/parquet file of documents; default ``bright/<domain>/documents{,_long}.{parquet,jsonl[.gz]}``
            when present, else the HF hub.
        long: the long-document setting (``gold_ids_long``, ``long_documents``).
    """
    if domain not in BRIGHT_DOMAINS:
        raise DatasetError(f"unknown BRIGHT domain {domain!r}: choose from {', '.join(BRIGHT_DOMAINS)}")
    folder = Path(data_dir or default_data_dir()) / "bright" / domain
    examples = find_file(folder, "examples.jsonl")
    gold_field = "gold_ids_long" if long else "gold_ids"
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    excluded: dict[str, set[str]] = {}
    for lineno, rec in read_jsonl(examples, ("id", "query", gold_field)):
        qid = str(rec["id"])
        queries[qid] = rec["query"]
        if not isinstance(rec[gold_field], list):
            raise DatasetError(f"{examples}:{lineno}: field {gold_field} must be a list")
        qrels[qid] = {str(d): 1 for d in rec[gold_field]}
        excluded[qid] = {str(d) for d in rec.get("excluded_ids") or [] if d != "N/A"}

    if documents is None:
        stem = "documents_long" if long else "documents"
        local = [folder / f"{stem}{ext}" for ext in (".parquet", ".jsonl", ".jsonl.gz")]
        documents = next((p for p in local if p.is_file()), None)
    if documents is not None and not Path(documents).is_file():
        raise DatasetError(f"{documents}: file not found")
    corpus = _read_documents(Path(documents)) if documents is not None else _hub_documents(domain, long)
    for qid, gold in qrels.items():
        unknown = [d for d in gold if d not in corpus]
        if unknown:
            raise DatasetError(f"{examples}: query {qid}: gold id {unknown[0]!r} is not among the documents")
    return BrightDataset(domain, corpus, queries, qrels, excluded)
