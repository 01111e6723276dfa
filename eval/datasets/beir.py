"""BEIR datasets: a folder with ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``.

A dataset is found by name under the data directory (``$RANKWISE_DATA/beir/<name>``), as a folder
path, or — when online — downloaded once from BEIR's release and cached.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rankwise.core.io import DatasetError, find_file, id_field, read_jsonl, read_qrels_tsv, text_field
from rankwise.core.paths import cache_dir, default_data_dir

__all__ = ["BeirDataset", "load_beir", "BEIR_URL"]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


@dataclass
class BeirDataset:
    """One split of a BEIR dataset.

    Attributes:
        name: dataset name (``scifact``).
        corpus: ``docid -> {"title": str, "text": str}``.
        queries: ``qid -> text``, only the queries judged in this split.
        qrels: ``qid -> {docid: grade}``.
    """

    name: str
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    all_queries: dict[str, str] = field(default_factory=dict, repr=False)

    def doc_text(self, docid: str) -> str:
        """Title and text joined as BEIR "flat" does (``title + " " + text``)."""
        doc = self.corpus[docid]
        return f"{doc['title']} {doc['text']}".strip()


def _resolve(name_or_dir: str | Path, data_dir: Path | None, download: bool) -> Path:
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    for candidate in (base / "beir" / str(name_or_dir), base / str(name_or_dir)):
        if (candidate / "qrels").is_dir():
            return candidate
    cached = cache_dir() / "datasets" / "beir" / str(name_or_dir)
    if (cached / "qrels").is_dir():
        return cached
    if "/" in str(name_or_dir) or "\\" in str(name_or_dir) or str(name_or_dir).startswith((".", "~")):
        # a path, not a BEIR name: never downloaded
        raise DatasetError(f"{path}: no such dataset folder (a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/)")
    if not download:
        raise DatasetError(f"BEIR dataset {name_or_dir!r} not found under {base / 'beir'} (set --data-dir or RANKWISE_DATA)")
    return _download(str(name_or_dir), cached)


def _download(name: str, target: Path) -> Path:
    """Fetch BEIR's zip for ``name`` into ``target`` (atomic: a partial download leaves nothing)."""
    url = BEIR_URL.format(name=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as err:
            raise DatasetError(f"BEIR dataset {name!r}: not found locally and download from {url} failed ({err})") from None
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        extracted = Path(tmp) / name
        if not (extracted / "qrels").is_dir():
            raise DatasetError(f"{url}: archive has no {name}/qrels folder")
        extracted.rename(target)
    return target


def load_beir(
    name_or_dir: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    download: bool = True,
) -> BeirDataset:
    """Load one split of a BEIR dataset, checking that every judged id exists.

    Args:
        name_or_dir: a dataset name (``scifact``) or a folder in BEIR's layout.
        split: which ``qrels/<split>.tsv`` to read.
        data_dir: where named datasets live (default ``$RANKWISE_DATA``).
        download: fetch BEIR's zip by name when it is not found locally.

    Raises:
        DatasetError: naming the file and line: a duplicate document or query id, an id that is not a
            string or integer, a title or text that is not a string (a document's may be ``null``; a
            query's may not), an empty judged query, a bad or duplicate judgement, or a judged id that
            does not exist.

    Example:
        >>> ds = load_beir("scifact", "test")  # doctest: +SKIP
        >>> len(ds.corpus), len(ds.queries)  # doctest: +SKIP
        (5183, 300)
    """
    folder = _resolve(name_or_dir, Path(data_dir) if data_dir else None, download)
    corpus_path = find_file(folder, "corpus.jsonl")
    queries_path = find_file(folder, "queries.jsonl")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DatasetError(f"{qrels_path}: no such split (available: {', '.join(splits) or 'none'})")

    corpus: dict[str, dict[str, str]] = {}
    for lineno, rec in read_jsonl(corpus_path, ("_id", "text")):
        where = f"{corpus_path}:{lineno}"
        docid = id_field(rec, ("_id",), where)
        if docid in corpus:
            raise DatasetError(f"{where}: duplicate document id {docid!r}")
        corpus[docid] = {"title": text_field(rec, "title", where), "text": text_field(rec, "text", where)}
    all_queries: dict[str, str] = {}
    query_line: dict[str, int] = {}
    for lineno, rec in read_jsonl(queries_path, ("_id", "text")):
        qid = id_field(rec, ("_id",), f"{queries_path}:{lineno}")
        if not isinstance(rec["text"], str):
            raise DatasetError(f"{queries_path}:{lineno}: field 'text' of query {qid!r} is "
                               f"{json.dumps(rec['text'])}, not a string")
        if qid in all_queries:
            raise DatasetError(f"{queries_path}:{lineno}: duplicate query id {qid!r}")
        all_queries[qid], query_line[qid] = rec["text"], lineno
    qrels = read_qrels_tsv(qrels_path)
    for qid, judged in qrels.items():
        if qid not in all_queries:
            raise DatasetError(f"{qrels_path}: query-id {qid!r} is not in {queries_path.name}")
        if not all_queries[qid].strip():
            raise DatasetError(f"{queries_path}:{query_line[qid]}: query {qid!r} is empty (judged in {qrels_path.name})")
        for docid in judged:
            if docid not in corpus:
                raise DatasetError(f"{qrels_path}: corpus-id {docid!r} (query {qid}) is not in {corpus_path.name}")
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(Path(folder).name, split, corpus, queries, qrels, all_queries)
