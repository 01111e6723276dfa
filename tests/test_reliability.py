"""Regression tests of issue 23: no code from a model directory, loopback Ray, no silently wrong
output, and one-line errors (file, line, field) instead of tracebacks on bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rankwise.core.io import DatasetError
from rankwise.core.model_dir import ModelDirError


# -- 1. trust_remote_code comes from the caller only -----------------------------------------------
def _tiny_hllm_dir(path: Path, asks_for_code: bool) -> Path:
    import torch

    from rankwise.recsys.hllm import HLLM, HLLMConfig

    config = HLLMConfig(n_items=3, item_dim=4, hidden=8, n_layers=1, n_heads=1)
    HLLM(config, item_vectors=torch.randn(4, 4)).save_pretrained(path)
    meta = json.loads((path / "rankwise.json").read_text())
    meta["config"]["trust_remote_code"] = asks_for_code
    (path / "rankwise.json").write_text(json.dumps(meta))
    return path


def _plant_code(model_dir: Path, marker: Path) -> None:
    """A user_llm/ HF config whose auto_map points at a module that writes ``marker`` when imported."""
    (model_dir / "user_llm").mkdir()
    (model_dir / "user_llm" / "planted.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass PlantedConfig(PretrainedConfig):\n    model_type = 'planted'\n"
    )
    (model_dir / "user_llm" / "config.json").write_text(json.dumps(
        {"model_type": "planted", "auto_map": {"AutoConfig": "planted.PlantedConfig"}, "hidden_size": 8}
    ))


def test_model_dir_trust_remote_code_field_is_ignored_with_a_warning(tmp_path, caplog):
    from rankwise.recsys import load_recommender

    model_dir = _tiny_hllm_dir(tmp_path / "hllm", asks_for_code=True)
    with caplog.at_level(logging.WARNING, logger="rankwise"):
        model = load_recommender(model_dir)
    assert model.config.trust_remote_code is False
    assert "asks for trust_remote_code" in caplog.text and "rankwise.json" in caplog.text
    assert load_recommender(model_dir, trust_remote_code=True).config.trust_remote_code is True


def test_model_dir_cannot_run_planted_code_without_the_caller(tmp_path):
    from rankwise.recsys import load_recommender

    model_dir = _tiny_hllm_dir(tmp_path / "hllm", asks_for_code=True)
    marker = tmp_path / "pwned"
    _plant_code(model_dir, marker)
    with pytest.raises(ModelDirError, match="trust_remote_code=True"):
        load_recommender(model_dir)
    assert not marker.exists()


def test_recommend_predict_planted_code_is_one_line_error_without_flag(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app

    model_dir = _tiny_hllm_dir(tmp_path / "hllm", asks_for_code=True)
    marker = tmp_path / "pwned"
    _plant_code(model_dir, marker)
    res = CliRunner().invoke(app, ["recommend", "predict", "--model-dir", str(model_dir), "--user", "1"])
    assert res.exit_code == 1 and "--trust-remote-code" in res.output and "Traceback" not in res.output
    assert not marker.exists()


# -- 2. Ray: a local cluster binds to loopback; another cluster only when named ---------------------
def _batch_config(tmp_path: Path, **kw):
    from rankwise.serving.batch import BatchRerankConfig

    return BatchRerankConfig(tmp_path / "c.trec", tmp_path / "q.jsonl", tmp_path / "d.jsonl", tmp_path / "o.trec", **kw)


def test_ray_init_kwargs_local_cluster_is_loopback_without_dashboard(tmp_path):
    from rankwise.serving.batch import ray_init_kwargs

    local = ray_init_kwargs(_batch_config(tmp_path, engine="ray", workers=3))
    assert local["_node_ip_address"] == "127.0.0.1" and local["include_dashboard"] is False
    assert local["address"] == "local" and local["num_cpus"] == 3  # never joins RAY_ADDRESS implicitly
    remote = ray_init_kwargs(_batch_config(tmp_path, engine="ray", ray_address="ray://head:10001"))
    assert remote["address"] == "ray://head:10001" and "_node_ip_address" not in remote


def test_ray_local_cluster_listens_on_loopback_only(tmp_path):
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    from rankwise.serving.batch import _start_ray

    if ray.is_initialized():
        ray.shutdown()
    _start_ray(_batch_config(tmp_path, engine="ray", workers=1))
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = set()
        for proc in procs:
            try:
                conns = proc.net_connections(kind="inet")
            except (psutil.Error, OSError):
                continue
            listening |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    finally:
        ray.shutdown()
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


# -- rerank inputs: a tiny job ----------------------------------------------------------------------
def _job(tmp_path: Path, candidates: str, suffix: str = ".trec", queries: list[dict] | None = None) -> dict[str, Path]:
    docs = [{"_id": f"d{i}", "title": "", "text": f"document number {i} about cells"} for i in range(1, 5)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = queries or [{"_id": "q1", "text": "cells"}, {"_id": "q2", "text": "numbers"}]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / f"cands{suffix}").write_text(candidates)
    fake = tmp_path / "model"  # enough for the checks that run before a model is loaded
    fake.mkdir(exist_ok=True)
    (fake / "rankwise.json").write_text(json.dumps({"kind": "cross-encoder"}))
    return {"candidates": tmp_path / f"cands{suffix}", "queries": tmp_path / "queries.jsonl",
            "corpus": tmp_path / "corpus.jsonl", "model": fake}


TREC = "".join(f"{q} Q0 d{i} {i} {5 - i}.0 bm25\n" for q in ("q1", "q2") for i in range(1, 5))


def _rerank_cli(job: dict[str, Path], output: Path, *extra: str):
    from typer.testing import CliRunner

    from rankwise.cli import app

    args = ["rerank", "--model", str(job["model"]), "--candidates", str(job["candidates"]), "--corpus", str(job["corpus"]),
            "--queries", str(job["queries"]), "--output", str(output), "--json", *extra]
    return CliRunner().invoke(app, args)


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- 3. resume refuses changed weights ------------------------------------------------------------------
def test_rerank_resume_refuses_weights_changed_in_the_same_directory(tmp_path):
    from tests._serving_models import tiny_cross_encoder_dir

    job = _job(tmp_path, TREC)
    job["model"] = tiny_cross_encoder_dir(tmp_path / "ce")
    out = tmp_path / "out.trec"
    assert _rerank_cli(job, out).exit_code == 0
    assert _rerank_cli(job, out, "--resume").exit_code == 0  # same weights: the finished job is reused
    tiny_cross_encoder_dir(tmp_path / "ce", initializer_range=0.5)  # retrained into the same directory
    _one_line_error(_rerank_cli(job, out, "--resume"), "job changed", "model")


# -- 4, 5, 7, 10. candidate files --------------------------------------------------------------------
@pytest.mark.parametrize(("suffix", "text", "needles"), [
    (".jsonl", '{"qid": "q1", "docid": "d1", "score": 1.0}\n{"qid": "q1", "docid": "d2", "score": NaN}\n', (":2:", "'score' is nan")),
    (".jsonl", '{"qid": "q1", "docid": "d1", "score": 1.0}\n{"qid": "q1", "docid": "d2", "score": null}\n', (":2:", "'score' is null")),
    (".jsonl", '{"qid": "q1", "docid": "d1", "score": 1.0}\n{"qid": "q1", "docid": \n', (":2:", "malformed JSON")),
    (".trec", TREC + "q1 Q0 d3\n", (":9:", "6", "3 fields")),
    (".trec", "q1 Q0 d1 1 high bm25\n", (":1:", "'score'", "'high'")),
    (".trec", "q1 Q0 d1 1 nan bm25\n", (":1:", "'score'", "finite")),
    (".trec", TREC + "q2 Q0 d4 9 0.5 bm25\n", (":9:", "duplicate candidate", "d4")),
])
def test_rerank_bad_candidates_are_one_line_errors_naming_file_and_line(tmp_path, suffix, text, needles):
    job = _job(tmp_path, text, suffix)
    res = _rerank_cli(job, tmp_path / "out.trec")
    _one_line_error(res, f"cands{suffix}", *needles)
    assert not (tmp_path / "out.trec").exists()


def test_check_candidates_parquet_names_the_row_of_a_null_score_or_duplicate(tmp_path):
    import polars as pl

    from rankwise.eval.candidate_check import check_candidates

    path = tmp_path / "c.parquet"
    pl.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d2"], "score": [1.0, None]}).write_parquet(path)
    with pytest.raises(DatasetError, match=r"c.parquet: row 1: field 'score' is null"):
        check_candidates(path)
    pl.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d1"], "score": [1.0, 2.0]}).write_parquet(path)
    with pytest.raises(DatasetError, match=r"row 1: duplicate candidate"):
        check_candidates(path)
    pl.DataFrame({"qid": ["q1", "q1"], "docid": ["d1", "d2"], "score": [1.0, 2.0]}).write_parquet(path)
    assert check_candidates(path) == 2


# -- 8, 9. empty and null queries ----------------------------------------------------------------------
def test_rerank_empty_query_names_the_query_id_file_and_line(tmp_path):
    job = _job(tmp_path, TREC, queries=[{"_id": "q1", "text": "cells"}, {"_id": "q2", "text": "  "}])
    _one_line_error(_rerank_cli(job, tmp_path / "out.trec"), "queries.jsonl:2", "'q2'", "empty")


def test_rerank_null_query_text_is_a_one_line_error(tmp_path):
    job = _job(tmp_path, TREC, queries=[{"_id": "q1", "text": None}, {"_id": "q2", "text": "x"}])
    _one_line_error(_rerank_cli(job, tmp_path / "out.trec"), "queries.jsonl:1", "'text'", "null")


def _beir_folder(tmp_path: Path, queries: str, corpus: str | None = None) -> Path:
    (tmp_path / "qrels").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text(corpus or '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n')
    (tmp_path / "queries.jsonl").write_text(queries)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return tmp_path


@pytest.mark.parametrize(("queries", "needle"), [
    ('{"_id": "q1", "text": ""}\n', "queries.jsonl:1: query 'q1' is empty"),
    ('{"_id": "q0", "text": "x"}\n{"_id": "q1", "text": null}\n', "queries.jsonl:2: field 'text' of query 'q1' is null"),
])
def test_beir_empty_or_null_query_is_an_error_naming_file_line_and_id(tmp_path, queries, needle):
    from rankwise.eval.datasets.beir import load_beir

    with pytest.raises(DatasetError, match=needle):
        load_beir(_beir_folder(tmp_path, queries), "test", download=False)


def test_eval_beir_null_query_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app

    folder = _beir_folder(tmp_path / "ds", '{"_id": "q1", "text": null}\n')
    res = CliRunner().invoke(app, ["eval", "beir", "--dataset", str(folder), "--output-dir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "queries.jsonl:1" in res.output and "Traceback" not in res.output, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), repr(res.exception)


# -- 6. duplicate BEIR document ids ----------------------------------------------------------------
def test_beir_duplicate_document_id_names_file_line_and_id(tmp_path):
    from rankwise.eval.datasets.beir import load_beir

    corpus = '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n{"_id": "d1", "text": "c"}\n'
    folder = _beir_folder(tmp_path, '{"_id": "q1", "text": "x"}\n', corpus)
    with pytest.raises(DatasetError, match=r"corpus.jsonl:3: duplicate document id 'd1'"):
        load_beir(folder, "test", download=False)


# -- 11. resume manifest of the wrong shape ----------------------------------------------------------
@pytest.mark.parametrize("manifest", ["[]", '{"key": {}, "chunks": []}', '{"key": {}, "chunks": {"0": {"file": "../x"}}}'])
def test_rerank_resume_with_a_wrongly_shaped_manifest_is_a_one_line_error(tmp_path, manifest):
    job = _job(tmp_path, TREC)
    parts = tmp_path / "out.trec.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(manifest)
    _one_line_error(_rerank_cli(job, tmp_path / "out.trec", "--resume"), "manifest.json", "corrupt manifest")


# -- 14. bad UTF-8: line number and byte offset in the file ------------------------------------------
def test_bad_utf8_reports_line_and_byte_offset_in_the_file(tmp_path):
    from rankwise.core.io import read_jsonl

    good = b"".join(b'{"_id": "%d", "text": "%s"}\n' % (i, b"x" * 2000) for i in range(9))
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(good + b'{"_id": "9", "text": "caf\xff"}\n')
    offset = len(good) + len(b'{"_id": "9", "text": "caf')
    with pytest.raises(DatasetError, match=rf"corpus.jsonl:10: not valid UTF-8 \(.* at byte {offset} of the file\)"):
        list(read_jsonl(path, ("_id",)))


def test_batch_null_scores_never_win_the_top_k(tmp_path):
    from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank
    from tests._serving_models import HashRanker

    rows = [{"qid": "q1", "docid": f"d{i}", "score": None if i > 2 else float(i)} for i in range(1, 5)]
    job = _job(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), ".jsonl")
    config = BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], tmp_path / "out.trec", top_k=2)
    with pytest.raises(DatasetError, match=r"cands.jsonl:3: field 'score' is null"):
        run_batch_rerank(config, HashRanker, "hash")
    assert not (tmp_path / "out.trec").exists()


# -- 12. malformed interaction files ------------------------------------------------------------------
@pytest.mark.parametrize(("content", "needle"), [
    (b"user_id,item_id,seq_index\n1,a,0\n1,b,x\n1,c,2\n", ":3: field 'seq_index' is 'x'"),
    (b"user_id,item_id,seq_index\n1,a,0\n1,b,1,9\n1,c,2\n", ":3: expected 3 fields"),
    (b"user_id,item_id,seq_index\n1,a,0\n1,b\n1,c,2\n", ":3: expected 3 fields"),
    (b'user_id,item_id,seq_index\n1,a,0\n"1,b,1\n1,c,2\n', ":3: malformed CSV"),
    (b"", ": empty file"),
    (b"user_id,item_id,seq_index\n", ": header only"),
    (b"user_id,item_id,seq_index\n1,a,0\n1,\xff,1\n1,c,2\n", ":3: not valid UTF-8 (invalid start byte at byte 34 of the file)"),
])
def test_recommend_train_malformed_interactions_is_a_one_line_error(tmp_path, content, needle):
    import gzip

    from typer.testing import CliRunner

    from rankwise.cli import app

    folder = tmp_path / "ds"
    folder.mkdir()
    with gzip.open(folder / "interactions.csv.gz", "wb") as fh:
        fh.write(content)
    res = CliRunner().invoke(app, ["recommend", "train", "--dataset", str(folder), "--output", str(tmp_path / "m")])
    _one_line_error(res, "interactions.csv.gz" + needle)


# -- 13. --output that is an existing file -------------------------------------------------------------
def test_recommend_train_and_export_refuse_an_output_that_is_a_file(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app

    taken = tmp_path / "taken"
    taken.write_text("keep me")
    res = CliRunner().invoke(app, ["recommend", "train", "--dataset", "ml-100k", "--output", str(taken)])
    _one_line_error(res, str(taken), "not a directory")
    res = CliRunner().invoke(app, ["export", "--model-dir", str(tmp_path), "--output", str(taken)])
    _one_line_error(res, str(taken), "not a directory")
    assert taken.read_text() == "keep me"
