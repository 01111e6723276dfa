"""Shared test fixtures: real data (``$RANKWISE_DATA`` or ``../shared/data``), an isolated cache,
and a small real BEIR folder cut from SciFact for tests that run a model over a corpus."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from rankwise.core.paths import default_data_dir


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Indexes and vectors built by tests go to a per-session folder, not the user's cache."""
    if "RANKWISE_CACHE" not in os.environ:
        os.environ["RANKWISE_CACHE"] = str(tmp_path_factory.mktemp("rankwise-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "beir" / "scifact").is_dir():
        pytest.fail(f"real data not found at {path}: set RANKWISE_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def scifact_small(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR folder with the first 20 SciFact test queries, their judged documents and 150 other
    real documents (the first of the corpus): small enough to encode in seconds."""
    from rankwise.eval.datasets.beir import load_beir

    ds = load_beir("scifact", "test", data_dir)
    qids = sorted(ds.qrels, key=int)[:20]
    keep = {d for q in qids for d in ds.qrels[q]} | set(list(ds.corpus)[:150])
    out = tmp_path_factory.mktemp("scifact-small")
    (out / "qrels").mkdir()
    with gzip.open(out / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        for d in ds.corpus:
            if d in keep:
                fh.write(json.dumps({"_id": d, **ds.corpus[d]}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in qids:
            fh.write(json.dumps({"_id": q, "text": ds.queries[q]}) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, g in ds.qrels[q].items():
                fh.write(f"{q}\t{d}\t{g}\n")
    return out


@pytest.fixture(scope="session")
def bm25_scifact(data_dir: Path):
    """SciFact test and its BM25 top-100 candidate set (pyserini, built once per session)."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever

    ds = load_beir("scifact", "test", data_dir)
    bm25 = BM25Retriever.from_corpus({d: ds.doc_text(d) for d in ds.corpus})
    return ds, bm25.batch_search(ds.queries, 100)
