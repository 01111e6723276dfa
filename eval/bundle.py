"""A self-contained candidate bundle: queries, first-stage candidates, qrels and document texts of a
BEIR dataset in one gzipped JSON file, so reranking and training run where pyserini (Java) is not
installed, e.g. on a GPU machine.

Layout (``scifact_lists.json.gz``-style)::

    {"queries": {split: {qid: text}}, "bm25": {split: {qid: [[docid, score, rank], ...]}},
     "qrels": {"train": {...}, "test": {...}}, "docs": {docid: text}, "top_k": k, "seed": s}

Splits: ``fit`` and ``dev`` (train queries with a positive, cut by :func:`split_dev_queries`) and ``test``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

__all__ = ["build_bundle", "read_bundle", "write_bundle"]


def build_bundle(dataset: str | Path, top_k: int = 100, seed: int = 0, dev_fraction: float = 0.2,
                 data_dir: str | Path | None = None) -> dict[str, Any]:
    """BM25 (pyserini) top-``top_k`` for every fit/dev/test query of a BEIR dataset with a train split."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever
    from rankwise.train.dev_eval import split_dev_queries

    train, test = load_beir(dataset, "train", data_dir=data_dir), load_beir(dataset, "test", data_dir=data_dir)
    doc_text = {d: train.doc_text(d) for d in train.corpus}
    bm25 = BM25Retriever.from_corpus(doc_text)
    fit_ids, dev_ids = split_dev_queries(train.qrels, dev_fraction, seed)
    splits = {"fit": {q: train.queries[q] for q in fit_ids}, "dev": {q: train.queries[q] for q in dev_ids},
              "test": dict(test.queries)}
    hits = {name: {q: [[h.docid, h.score, h.rank] for h in bm25.search(text, top_k)] for q, text in qs.items()}
            for name, qs in splits.items()}
    needed = {d for per in hits.values() for hs in per.values() for d, _, _ in hs}
    needed |= {d for q in fit_ids for d in train.qrels[q]}
    return {"queries": splits, "bm25": hits, "top_k": top_k, "seed": seed,
            "qrels": {"train": train.qrels, "test": test.qrels},
            "docs": {d: doc_text[d] for d in sorted(needed) if d in doc_text}}


def write_bundle(path: str | Path, bundle: dict[str, Any]) -> Path:
    """Write atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(bundle, f)
    tmp.replace(path)
    return path


def read_bundle(path: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Read a bundle; ``limit`` keeps the first ``limit`` queries of each split (smoke tests)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    missing = [k for k in ("queries", "bm25", "qrels", "docs", "top_k") if k not in doc]
    if missing:
        from rankwise.core.io import DatasetError

        raise DatasetError(f"{path}: not a candidate bundle (fields {missing} missing)")
    if limit:
        for name, qs in doc["queries"].items():
            doc["queries"][name] = dict(list(qs.items())[:limit])
    return doc
