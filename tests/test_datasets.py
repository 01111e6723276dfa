"""Dataset loaders: real SciFact / BRIGHT files, and one clear error per kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankwise.core.io import DatasetError
from rankwise.eval.datasets.beir import load_beir
from rankwise.eval.datasets.bright import load_bright


def test_load_beir_scifact_counts(data_dir):
    test = load_beir("scifact", "test", data_dir)
    assert (len(test.corpus), len(test.queries), len(test.all_queries)) == (5183, 300, 1109)
    assert sum(len(v) for v in test.qrels.values()) == 339
    assert len(load_beir("scifact", "train", data_dir).queries) == 809
    doc = next(iter(test.corpus))
    assert test.doc_text(doc).startswith(test.corpus[doc]["title"])


def _beir_folder(root: Path, corpus: bytes | str, qrels: str = "q1\td1\t1\n") -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(corpus if isinstance(corpus, bytes) else corpus.encode())
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a question"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


GOOD_DOC = json.dumps({"_id": "d1", "title": "t", "text": "x"}) + "\n"


@pytest.mark.parametrize(
    ("corpus", "qrels", "message"),
    [
        (GOOD_DOC + '{"_id": "d2", "text": \n', "q1\td1\t1\n", r"corpus.jsonl:2: malformed JSON"),
        (GOOD_DOC + json.dumps({"_id": "d2"}) + "\n", "q1\td1\t1\n", r"corpus.jsonl:2: missing field\(s\) text"),
        ("", "q1\td1\t1\n", r"corpus.jsonl: empty file"),
        (b'{"_id": "d1", "title": "t", "text": "\xff\xfe"}\n', "q1\td1\t1\n", r"corpus.jsonl:1: not valid UTF-8 \(invalid start byte at byte 37 of the file\)"),
        (GOOD_DOC, "q1\td9\t1\n", r"test.tsv: corpus-id 'd9' \(query q1\) is not in corpus.jsonl"),
        (GOOD_DOC, "q7\td1\t1\n", r"test.tsv: query-id 'q7' is not in queries.jsonl"),
        (GOOD_DOC, "q1\td1\tx\n", r"test.tsv:2: score 'x' is not a number"),
        (GOOD_DOC, "q1 d1\n", r"test.tsv:2: expected"),
    ],
)
def test_load_beir_bad_input_names_file_and_line(tmp_path, corpus, qrels, message):
    folder = _beir_folder(tmp_path / "ds", corpus, qrels)
    with pytest.raises(DatasetError, match=message):
        load_beir(folder, "test", download=False)


def test_load_beir_unknown_split_and_name(tmp_path):
    folder = _beir_folder(tmp_path / "ds", GOOD_DOC)
    with pytest.raises(DatasetError, match="no such split .*available: test"):
        load_beir(folder, "dev", download=False)
    with pytest.raises(DatasetError, match="'nope' not found under"):
        load_beir("nope", data_dir=tmp_path, download=False)


def test_load_bright_biology_with_local_documents(data_dir, tmp_path):
    examples = [json.loads(line) for line in gzip.open(data_dir / "bright/biology/examples.jsonl.gz", "rt")]
    gold = {d for e in examples for d in e["gold_ids"]}
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d, "content": f"text of {d}"}) + "\n" for d in sorted(gold)))
    ds = load_bright("biology", data_dir, documents=docs)
    assert len(ds.queries) == len(examples) == len(ds.qrels)
    assert ds.qrels[examples[0]["id"]] == {d: 1 for d in examples[0]["gold_ids"]}
    with_excluded = [e for e in examples if e["excluded_ids"] != ["N/A"]]
    for e in with_excluded:
        assert ds.excluded[e["id"]] == set(e["excluded_ids"])


def test_load_bright_errors_are_one_line(data_dir, tmp_path):
    with pytest.raises(DatasetError, match="unknown BRIGHT domain 'chemistry'"):
        load_bright("chemistry", data_dir)
    with pytest.raises(DatasetError, match="missing.jsonl: file not found"):
        load_bright("biology", data_dir, documents=tmp_path / "missing.jsonl")
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"id": "x", "content": "y"}) + "\n")
    with pytest.raises(DatasetError, match="gold id .* is not among the documents"):
        load_bright("biology", data_dir, documents=partial)


def test_load_beir_missing_folder_is_an_error_not_a_download(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*_a, **_k):
        raise AssertionError("a path must not be downloaded")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for missing in (tmp_path / "absent", "./absent-folder", "~/absent-folder"):
        with pytest.raises(DatasetError, match="no such dataset folder"):
            load_beir(missing, data_dir=tmp_path)
