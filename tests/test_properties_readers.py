"""Property-based tests (hypothesis) of every reader of a user's files: BEIR corpus, queries and
qrels; candidate files (TREC, jsonl) read by ``rerank``; interaction files (CSV and RecBole); resume
manifests. Whatever the bytes, the outcome is a clean result or one of the project's one-line errors
(a ``ValueError``: DatasetError, InteractionDataError, ModelDirError, OutputError) naming the file,
never another exception, and a failed ``rerank`` leaves no output file behind.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests._serving_models import HashRanker  # noqa: E402

T = TypeVar("T")

#: 40 examples per property keeps the suite to a few seconds; set RANKWISE_HYPOTHESIS_EXAMPLES to search harder.
FAST = settings(max_examples=int(os.environ.get("RANKWISE_HYPOTHESIS_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _clean_or_one_line(call: Callable[[], T], *names: str) -> T | None:
    """``call()``; a ValueError must be one line naming one of ``names`` (then ``None``). Anything
    else (a traceback for the user) fails the test."""
    try:
        result = call()
    except ValueError as err:
        hypothesis.event("one-line error")
        message = str(err)
        assert message.strip() and "\n" not in message.strip(), message
        assert any(n in message for n in names), (names, message)
        return None
    hypothesis.event("clean result")
    return result


# -- building blocks ----------------------------------------------------------------------------------
IDS = st.sampled_from(["d1", "d2", "q1", "q2", "1", "", " ", "a b", "é", 'q"1'])
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    IDS, st.text(max_size=6),
)
JSON_VALUES = st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=2), st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2))


def _json_line(fields: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A JSON object with some of ``fields``, of any type, or a broken line."""
    record = st.fixed_dictionaries({}, optional={f: st.one_of(IDS, JSON_VALUES) for f in fields})
    good = record.map(lambda r: json.dumps(r))
    broken = st.one_of(good.map(lambda s: s[: max(1, len(s) // 2)]), st.text(max_size=12), st.just(""), st.just("[]"),
                       st.just("null"), st.just('{"a": NaN}'))
    return st.one_of(good, broken)


@st.composite
def _edited(draw: st.DrawFn, valid: st.SearchStrategy[list[str]], junk: st.SearchStrategy[str]) -> list[str]:
    """A valid file's lines with 0-2 edge-case lines inserted anywhere."""
    lines = list(draw(valid))
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(junk))
    return lines


def _file_bytes(lines: st.SearchStrategy[list[str]]) -> st.SearchStrategy[bytes]:
    """Lines joined by ``\n`` (sometimes ``\r\n``), UTF-8, sometimes with a stray invalid byte."""
    def join(parts: list[str], crlf: bool, bad: int | None) -> bytes:
        data = ("\r\n" if crlf else "\n").join(parts).encode() + (b"\n" if parts else b"")
        if bad is not None and data:
            cut = bad % len(data)
            data = data[:cut] + b"\xff" + data[cut:]
        return data

    return st.builds(join, lines, st.booleans(), st.one_of(*[st.none()] * 5, st.integers(0, 400)))


def _unique(elements: st.SearchStrategy[tuple], key: int = 0, **kw: int) -> st.SearchStrategy[list[tuple]]:
    return st.lists(elements, unique_by=lambda t: t[:key + 1] if key else t[0], **kw)


def _workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="rankwise-prop-")


# -- BEIR: corpus.jsonl, queries.jsonl, qrels/test.tsv ------------------------------------------------
DOC_IDS, QUERY_IDS = st.sampled_from(["d1", "d2", "d3", "d4"]), st.sampled_from(["q1", "q2", "q3"])
TEXTS = st.one_of(st.sampled_from(["cells", "a b", " ", ""]), st.text(max_size=8))
CORPUS_LINES = _edited(
    _unique(st.tuples(DOC_IDS, st.one_of(st.none(), TEXTS), TEXTS), min_size=1).map(
        lambda docs: [json.dumps({"_id": d, "title": t, "text": x}) for d, t, x in docs]),
    st.one_of(_json_line(("_id", "title", "text")),
              st.builds(lambda d, f, v: json.dumps({"_id": d, "text": "x", f: v}), st.sampled_from(["d5", "d6"]), st.sampled_from(["text", "title"]), JSON_VALUES),
              st.builds(lambda v: json.dumps({"_id": v, "text": "x"}), JSON_VALUES)),
)
QUERY_LINES = _edited(
    _unique(st.tuples(QUERY_IDS, TEXTS), min_size=1).map(lambda qs: [json.dumps({"_id": q, "text": t}) for q, t in qs]),
    st.one_of(_json_line(("_id", "text")), st.builds(lambda v: json.dumps({"_id": v, "text": "x"}), JSON_VALUES)),
)
QRELS_LINES = _edited(
    st.tuples(st.booleans(), _unique(st.tuples(QUERY_IDS, DOC_IDS, st.integers(0, 2)), key=1, min_size=1)).map(
        lambda hq: ["query-id\tcorpus-id\tscore"] * hq[0] + [f"{q}\t{d}\t{g}" for q, d, g in hq[1]]),
    st.one_of(
        st.builds(lambda q, d, g: f"{q}\t{d}\t{g}", IDS, IDS, st.sampled_from(["x", "nan", "inf", "-1", "1.5", "1e400", ""])),
        st.builds(lambda q, d: f"{q}\t{d}", QUERY_IDS, DOC_IDS), st.text(max_size=10),
    ),
)


@FAST
@given(corpus=_file_bytes(CORPUS_LINES), queries=_file_bytes(QUERY_LINES), qrels=_file_bytes(QRELS_LINES))
def test_load_beir_is_clean_or_one_line_error(corpus: bytes, queries: bytes, qrels: bytes) -> None:
    from rankwise.eval.datasets.beir import load_beir

    with _workdir() as tmp:
        folder = Path(tmp)
        (folder / "qrels").mkdir()
        (folder / "corpus.jsonl").write_bytes(corpus)
        (folder / "queries.jsonl").write_bytes(queries)
        (folder / "qrels" / "test.tsv").write_bytes(qrels)
        ds = _clean_or_one_line(lambda: load_beir(folder, "test", download=False), "corpus.jsonl", "queries.jsonl", "test.tsv")
    if ds is not None:  # a clean result is a usable one
        assert ds.queries and all(isinstance(t, str) and t.strip() for t in ds.queries.values())
        assert all(isinstance(d["title"], str) and isinstance(d["text"], str) for d in ds.corpus.values())
        assert all(d in ds.corpus for judged in ds.qrels.values() for d in judged)
        assert all(isinstance(g, int) for judged in ds.qrels.values() for g in judged.values())


# -- candidates + queries + corpus -> rerank: clean output or a one-line error and no output -----------
NUMBERS = st.sampled_from(["1", "2", "0", "-1", "1.5", "nan", "inf", "-inf", "x", "", "1e400", "3"])
SCORES = st.one_of(st.integers(-2, 5), st.floats(-2, 5))
TREC_LINES = _edited(
    st.tuples(st.sampled_from([" ", "\t"]), _unique(st.tuples(QUERY_IDS, st.sampled_from(["d1", "d2", "d3"]), st.integers(1, 3), SCORES),
                                                   key=1, min_size=1)).map(
        lambda sr: [sr[0].join([q, "Q0", d, str(r), repr(float(x)), "bm25"]) for q, d, r, x in sr[1]]),
    st.one_of(
        st.builds(lambda q, d, r, x: f"{q} Q0 {d} {r} {x} bm25", QUERY_IDS, st.sampled_from(["d1", "d9", '"d2', "d'3"]), NUMBERS, NUMBERS),
        st.lists(st.sampled_from(["q1", "Q0", "d1", "1", "2.0", "bm25", '"d2', "'", ""]), max_size=8).map(" ".join),
        st.text(max_size=12),
    ),
)
CAND_JSON_LINES = _edited(
    _unique(st.tuples(QUERY_IDS, st.sampled_from(["d1", "d2", "d3"]), SCORES, st.one_of(st.none(), st.integers(1, 3))), key=1, min_size=1).map(
        lambda rows: [json.dumps({"qid": q, "docid": d, "score": x, **({"rank": r} if r else {})}) for q, d, x, r in rows]),
    st.one_of(_json_line(("qid", "docid", "score", "rank")),
              st.builds(lambda q, x: json.dumps({"qid": q, "docid": "d1", "score": x}), st.one_of(QUERY_IDS, st.integers(1, 2)), JSON_VALUES)),
)
QUERIES_JSONL = _file_bytes(_edited(
    st.just([json.dumps({"_id": f"q{q}", "text": f"query {q}"}) for q in (1, 2, 3)]),
    st.one_of(_json_line(("_id", "text")), st.builds(lambda q, t: json.dumps({"_id": q, "text": t}), QUERY_IDS, JSON_VALUES)),
))
QUERIES_TSV = _file_bytes(_edited(
    st.just([f"q{q}\tquery {q}" for q in (1, 2, 3)]),
    st.one_of(st.builds(lambda q, t: f"{q}\t{t}", QUERY_IDS, st.sampled_from(["", " ", "a\tb"])), st.text(max_size=8)),
))
CORPUS = "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"}) + "\n" for i in (1, 2, 3))
CORPUS_JSONL = _file_bytes(_edited(
    st.just(CORPUS.splitlines()),
    st.one_of(_json_line(("_id", "docid", "title", "text")),
              st.builds(lambda d, f, v: json.dumps({"_id": d, "text": "x", f: v}), st.sampled_from(["d1", "d4"]), st.sampled_from(["text", "title"]), JSON_VALUES)),
))


def _rerank_job(folder: Path, candidates: bytes, suffix: str, queries: bytes, queries_suffix: str = ".jsonl",
                corpus: bytes = CORPUS.encode()) -> Any:
    from rankwise.serving.batch import BatchRerankConfig

    (folder / f"cands{suffix}").write_bytes(candidates)
    (folder / f"queries{queries_suffix}").write_bytes(queries)
    (folder / "corpus.jsonl").write_bytes(corpus)
    return BatchRerankConfig(folder / f"cands{suffix}", folder / f"queries{queries_suffix}", folder / "corpus.jsonl",
                             folder / "out.trec", top_k=3, chunk_queries=1)


def _rerank_clean_or_nothing(config: Any) -> None:
    from rankwise.serving.batch import run_batch_rerank

    result = _clean_or_one_line(lambda: run_batch_rerank(config, HashRanker, "hash"), config.candidates.name,
                                config.queries.name, config.corpus.name, "manifest.json")
    if result is None:
        assert not config.output.exists(), "a failed job left an output file"
        return
    lines = config.output.read_text().splitlines()
    assert len(lines) == result.docs and all(len(line.split(" ")) == 6 for line in lines)
    assert all(math.isfinite(float(line.split(" ")[4])) for line in lines)


@FAST
@given(candidates=_file_bytes(TREC_LINES), queries=QUERIES_JSONL, corpus=CORPUS_JSONL)
def test_rerank_trec_candidates_are_clean_or_one_line_error_without_output(candidates: bytes, queries: bytes, corpus: bytes) -> None:
    with _workdir() as tmp:
        _rerank_clean_or_nothing(_rerank_job(Path(tmp), candidates, ".trec", queries, corpus=corpus))


@FAST
@given(candidates=_file_bytes(CAND_JSON_LINES), queries=QUERIES_TSV)
def test_rerank_jsonl_candidates_are_clean_or_one_line_error_without_output(candidates: bytes, queries: bytes) -> None:
    with _workdir() as tmp:
        _rerank_clean_or_nothing(_rerank_job(Path(tmp), candidates, ".jsonl", queries, ".tsv"))


@FAST
@given(candidates=st.one_of(_file_bytes(TREC_LINES).map(lambda b: (b, ".trec")), _file_bytes(CAND_JSON_LINES).map(lambda b: (b, ".jsonl"))))
def test_check_candidates_agrees_with_the_readers(candidates: tuple[bytes, str]) -> None:
    """What the check accepts, every reader reads: same rows, finite scores."""
    from rankwise.eval.candidate_check import check_candidates
    from rankwise.eval.runs import read_candidates
    from rankwise.serving.batch import scan_candidates

    data, suffix = candidates
    with _workdir() as tmp:
        path = Path(tmp) / f"cands{suffix}"
        path.write_bytes(data)
        n = _clean_or_one_line(lambda: check_candidates(path), path.name)
        if n is not None:
            frame = read_candidates(path)
            scanned = scan_candidates(path).collect()
            assert frame.height == scanned.height == n
            assert all(math.isfinite(x) for x in frame["score"].to_list())


# -- interactions: interactions.csv.gz and RecBole .inter -----------------------------------------------
CELLS = st.sampled_from(["1", "2", "a", "b", "c", "0", "x", "-1", "", '"', '"a,b"', " 1", "1.0", "3"])
USER_ROWS = st.lists(st.tuples(st.sampled_from(["1", "2", "u3"]), st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=3, max_size=4)),
                     unique_by=lambda t: t[0], min_size=1, max_size=2)
CSV_LINES = _edited(
    USER_ROWS.map(lambda users: [f"{u},{i},{k}" for u, items in users for k, i in enumerate(items)]),
    st.lists(CELLS, max_size=5).map(",".join),
)
INTER_LINES = _edited(
    USER_ROWS.map(lambda users: [f"{u}\t{i}\t{10 + k}" for u, items in users for k, i in enumerate(items)]),
    st.lists(CELLS, max_size=4).map("\t".join),
)


@FAST
@given(header=st.sampled_from(["user_id,item_id,seq_index"] * 4 + ["user_id,item_id", "seq_index,item_id,user_id", ""]),
       body=_file_bytes(CSV_LINES))
def test_load_interactions_csv_is_clean_or_one_line_error(header: str, body: bytes) -> None:
    from rankwise.eval.datasets.interactions import load_interactions

    with _workdir() as tmp:
        folder = Path(tmp)
        (folder / "interactions.csv.gz").write_bytes(gzip.compress((header + "\n").encode() * bool(header) + body))
        data = _clean_or_one_line(lambda: load_interactions(folder), "interactions.csv.gz")
    if data is not None:
        lengths = data.interactions.group_by("user_id").len()["len"].to_list()
        assert lengths and min(lengths) >= 3
        assert data.interactions.null_count().sum_horizontal().item() == 0


@FAST
@given(header=st.sampled_from(["user_id:token\titem_id:token\ttimestamp:float"] * 4 + ["user_id:token\titem_id:token", "item_id:token", ""]),
       body=_file_bytes(INTER_LINES))
def test_load_interactions_recbole_is_clean_or_one_line_error(header: str, body: bytes) -> None:
    from rankwise.eval.datasets.interactions import load_interactions

    with _workdir() as tmp:
        folder = Path(tmp)
        (folder / "ds.inter").write_bytes((header + "\n").encode() * bool(header) + body)
        data = _clean_or_one_line(lambda: load_interactions(folder), "ds.inter")
    if data is not None:
        assert data.interactions.null_count().sum_horizontal().item() == 0


# -- resume manifests ---------------------------------------------------------------------------------------
TREC_JOB = "".join(f"q{q} Q0 d{d} {d} {4 - d}.0 bm25\n" for q in (1, 2, 3) for d in (1, 2, 3))
QUERIES_JOB = "".join(json.dumps({"_id": f"q{q}", "text": f"query {q}"}) + "\n" for q in (1, 2, 3))


@pytest.fixture(scope="module")
def killed_job(tmp_path_factory) -> tuple[Path, bytes]:
    """A job killed after its first chunk (parts and manifest, no output), and the clean run's bytes."""
    from rankwise.serving.batch import run_batch_rerank

    base = tmp_path_factory.mktemp("job")
    config = _rerank_job(base, TREC_JOB.encode(), ".trec", QUERIES_JOB.encode())
    reference = run_batch_rerank(config, HashRanker, "hash").output.read_bytes()
    config.output.unlink()
    import shutil

    shutil.rmtree(config.parts_dir)
    with pytest.raises(RuntimeError):
        run_batch_rerank(config, lambda: HashRanker(fail_after=1), "hash")
    assert not config.output.exists() and (config.parts_dir / "manifest.json").is_file()
    return base, reference


def _mutations(manifest: dict) -> st.SearchStrategy[Any]:
    """The real manifest with entries swapped, fields retyped or dropped; or any JSON at all."""
    chunk = st.fixed_dictionaries({}, optional={"file": st.one_of(st.sampled_from(["chunk-00000.parquet", "chunk-00001.parquet", "../x", ""]), JSON_VALUES),
                                                "sha256": st.one_of(st.just(manifest["chunks"]["0"]["sha256"]), JSON_VALUES),
                                                "rows": JSON_VALUES, "queries": JSON_VALUES})
    chunks = st.dictionaries(st.sampled_from(["0", "1", "2", "7", "x"]), st.one_of(chunk, JSON_VALUES), max_size=3)
    edited = st.builds(lambda c, complete, key: {**manifest, "chunks": c, "complete": complete,
                                                 **({"key": key} if key is not None else {})},
                       chunks, JSON_VALUES, st.one_of(st.none(), st.just(manifest["key"]), JSON_VALUES))
    moved = st.just({**manifest, "chunks": {"1": manifest["chunks"]["0"]}})  # the right file, recorded under another chunk
    entry = manifest["chunks"]["0"]
    plausible = st.sampled_from([  # well-shaped manifests that must not be trusted blindly
        {**manifest, "chunks": {}},
        {**manifest, "chunks": {"0": {**entry, "sha256": "0" * 64}}},
        {**manifest, "chunks": {"0": {**entry, "rows": 99}}},
        {**manifest, "complete": True, "output_sha256": entry["sha256"]},
        {**manifest, "chunks": {"0": entry, "1": {**entry, "file": "chunk-00001.parquet"}}},
        {**manifest, "chunks": {"0": entry, "5": {**entry, "file": "chunk-00005.parquet"}}},
    ])
    anything = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)
    return st.one_of(plausible, moved, edited, anything)


@FAST
@given(data=st.data(), raw=st.one_of(*[st.none()] * 4, st.binary(max_size=40)))
def test_resume_with_any_manifest_is_clean_or_one_line_error(killed_job, data, raw) -> None:
    import shutil

    from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank

    base, reference = killed_job
    manifest = json.loads((base / "out.trec.parts" / "manifest.json").read_text())
    doc = data.draw(_mutations(manifest))
    with _workdir() as tmp:
        folder = Path(tmp)
        for name in ("cands.trec", "queries.jsonl", "corpus.jsonl"):
            shutil.copy(base / name, folder / name)
        shutil.copytree(base / "out.trec.parts", folder / "out.trec.parts")
        (folder / "out.trec.parts" / "manifest.json").write_bytes(raw if raw is not None else json.dumps(doc).encode())
        config = BatchRerankConfig(folder / "cands.trec", folder / "queries.jsonl", folder / "corpus.jsonl", folder / "out.trec",
                                   top_k=3, chunk_queries=1, resume=True)
        result = _clean_or_one_line(lambda: run_batch_rerank(config, HashRanker, "hash"), "manifest.json")
        if result is None:
            assert not config.output.exists()
        else:  # whatever was reused, the output is the uninterrupted run's, byte for byte
            assert config.output.read_bytes() == reference
