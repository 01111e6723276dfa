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


# -- 15. eval --output-dir is checked before any work ---------------------------------------------------
def _no_dataset_load(monkeypatch) -> list:
    """Record load_beir calls, loading nothing: a refused --output-dir must come before the data."""
    import rankwise.eval.datasets.beir as beir

    calls: list = []
    monkeypatch.setattr(beir, "load_beir", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(SystemExit(3)))
    return calls


def test_eval_beir_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rankwise.cli import app

    calls = _no_dataset_load(monkeypatch)
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    res = CliRunner().invoke(app, ["eval", "beir", "--dataset", str(tmp_path), "--reranker", "none", "--output-dir", str(taken)])
    _one_line_error(res, str(taken), "not a directory")
    assert "reranker" not in res.output and calls == [] and taken.read_text() == "keep me"


# -- 16. a malformed line is reported as malformed, not as a later symptom ------------------------------
@pytest.mark.parametrize(("text", "needles"), [
    (TREC + "q1 broken\n", (":9:", "6 fields", "got 2")),
    ("q1 Q0 d1 1 1.0 bm25\nq1\tQ0\tbroken\t2\t0.5\tbm25\n", (":2:", "got 1")),
])
def test_rerank_malformed_trec_line_is_named_not_a_missing_document(tmp_path, text, needles):
    res = _rerank_cli(_job(tmp_path, text), tmp_path / "out.trec")
    _one_line_error(res, "cands.trec", *needles)
    assert "no document" not in res.output


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("interactions.csv.gz", "user_id,item_id,seq_index\n1,a,0\n1,b\n1,c,2\n", "interactions.csv.gz:3: expected 3 fields"),
    ("ml.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\ta\t1\n1\tb\n1\tc\t3\n", "ml.inter:3: expected 3 tab-separated fields"),
    ("ml.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\ta\t1\n1\tb\tlate\n1\tc\t3\n", "ml.inter:3: field 'timestamp' is 'late'"),
])
def test_short_interaction_line_is_reported_as_short_not_as_a_seq_index_gap(tmp_path, name, content, needle):
    import gzip

    from rankwise.eval.datasets.interactions import InteractionDataError, load_interactions

    raw = content.encode()
    (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(InteractionDataError, match=needle) as err:
        load_interactions(tmp_path)
    assert "seq_index' is not 0..n-1" not in str(err.value)


# -- 18. recommend predict depends on that user's history only ------------------------------------------
def _predict_dataset(folder: Path, rows: list[tuple[str, str, int]]) -> Path:
    import gzip

    folder.mkdir(parents=True)
    body = "user_id,item_id,seq_index\n" + "".join(f"{u},{i},{s}\n" for u, i, s in rows)
    (folder / "interactions.csv.gz").write_bytes(gzip.compress(body.encode()))
    return folder


def test_recommend_predict_serves_a_user_whatever_the_other_users_history_lengths(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app
    from tests._serving_models import tiny_sasrec_dir

    model = tiny_sasrec_dir(tmp_path / "sasrec")
    rows = [("long", f"i{k}", k - 1) for k in range(1, 6)] + [("short", "i9", 0), ("stranger", "x1", 0), ("stranger", "x2", 1)]
    data = _predict_dataset(tmp_path / "ds", rows)
    args = ["recommend", "predict", "--model-dir", str(model), "--dataset", str(data), "-k", "3", "--json"]
    for user, history in (("long", 5), ("short", 1)):
        res = CliRunner().invoke(app, [*args, "--user", user])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["history_len"] == history and len(out["items"]) == 3
        assert "drop_short_users" not in res.output
    res = CliRunner().invoke(app, [*args, "--user", "stranger"])  # only this user's items are unknown
    _one_line_error(res, "'stranger'", "known to the model", "x2")
    res = CliRunner().invoke(app, [*args, "--user", "nobody"])
    _one_line_error(res, "interactions.csv.gz", "'nobody'", "not in dataset")


def test_recommend_short_users_message_names_a_flag_the_cli_has(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app

    data = _predict_dataset(tmp_path / "ds", [("a", "i1", 0), ("a", "i2", 1), ("a", "i3", 2), ("b", "i1", 0)])
    res = CliRunner().invoke(app, ["recommend", "train", "--dataset", str(data), "--output", str(tmp_path / "m")])
    _one_line_error(res, "--drop-short-users")
    assert "--drop-short-users" in CliRunner().invoke(app, ["recommend", "train", "--help"]).output


# -- 19. --resume without an earlier job never replaces an output -----------------------------------------
def test_rerank_resume_without_an_earlier_job_refuses_an_existing_output(tmp_path):
    job = _job(tmp_path, TREC)
    out = tmp_path / "out.trec"
    out.write_text("an earlier run\n")
    res = _rerank_cli(job, out, "--resume")
    _one_line_error(res, str(out), "--resume found no earlier job", "--overwrite")
    assert out.read_text() == "an earlier run\n" and not (tmp_path / "out.trec.parts").exists()


# -- 20. one rule for every command that writes -------------------------------------------------------------
def _taken_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "rankwise.json").write_text('{"kind": "earlier"}')
    return path


def _writing_commands(tmp_path: Path) -> list[tuple[list[str], Path]]:
    """Each writing command with an --output that already holds an earlier output."""
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "job").mkdir()
    job = _job(tmp_path / "job", TREC)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text("{}")
    (tmp_path / "out.trec").write_text("earlier\n")
    rerank = ["rerank", "--model", str(job["model"]), "--candidates", str(job["candidates"]), "--corpus", str(job["corpus"]),
              "--queries", str(job["queries"])]
    out = {name: _taken_dir(tmp_path / name) for name in ("ce", "erank", "listwise", "iranker", "grpo", "rec", "onnx", "llm")}
    llm = ["--backbone", str(backbone), "--dataset", str(tmp_path / "none")]
    return [
        (["eval", "beir", "--dataset", str(tmp_path), "--reranker", "none", "--output-dir", str(eval_dir)], eval_dir),
        (["eval", "bright", "--reranker", "none", "--output-dir", str(eval_dir)], eval_dir),
        (["train", "cross-encoder", "--dataset", str(tmp_path / "none"), "--output", str(out["ce"])], out["ce"]),
        (["train", "erank", *llm, "--output", str(out["erank"])], out["erank"]),
        (["train", "listwise", *llm, "--output", str(out["listwise"])], out["listwise"]),
        (["train", "iranker", *llm, "--output", str(out["iranker"])], out["iranker"]),
        (["train", "rank-grpo", *llm, "--output", str(out["grpo"])], out["grpo"]),
        (["recommend", "train", "--dataset", str(tmp_path / "none"), "--output", str(out["rec"])], out["rec"]),
        (["export", "--model-dir", str(model), "--output", str(out["onnx"])], out["onnx"]),
        ([*rerank, "--output", str(tmp_path / "out.trec")], tmp_path / "out.trec"),
        (["models", "materialize", "smollm2", "--output", str(out["llm"])], out["llm"]),
    ]


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_writing_command_refuses_an_existing_output_without_overwrite(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rankwise.cli import app

    calls = _no_dataset_load(monkeypatch)
    import rankwise.rankers.llm as llm

    monkeypatch.setattr(llm, "gguf_path", lambda name: tmp_path / "x.gguf")  # the package need not be installed
    for args, output in _writing_commands(tmp_path):
        before = _snapshot(output)
        res = CliRunner().invoke(app, args)
        _one_line_error(res, str(output), "--overwrite")
        assert _snapshot(output) == before, args[:2]
        help_text = CliRunner().invoke(app, [*args[:2 if args[0] in ("eval", "train", "recommend", "models") else 1], "--help"]).output
        assert "--overwrite" in help_text, args[:2]
    assert calls == []  # refused before any data was read


def test_writing_commands_with_overwrite_get_past_the_output_check(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rankwise.cli import app

    calls = _no_dataset_load(monkeypatch)
    commands = _writing_commands(tmp_path)
    for args, output in commands[:1] + commands[2:9]:
        res = CliRunner().invoke(app, [*args, "--overwrite"])
        assert "--overwrite" not in res.output and "already holds" not in res.output, (args[:2], res.output)
    assert len(calls) == 6  # eval beir and the five trainers went on to read their datasets


def test_train_cross_encoder_resume_continues_in_its_own_output_directory(tmp_path):
    from typer.testing import CliRunner

    from rankwise.cli import app

    out = _taken_dir(tmp_path / "ce")  # a finished model, no checkpoint: nothing to resume
    args = ["train", "cross-encoder", "--dataset", str(tmp_path / "none"), "--output", str(out), "--resume"]
    _one_line_error(CliRunner().invoke(app, args), str(out), "found no checkpoint")
    (out / "checkpoint-4").mkdir()
    (out / "checkpoint-4" / "trainer_state.pt").write_bytes(b"")
    res = CliRunner().invoke(app, args)  # a checkpoint: the output check lets the run continue (the dataset then fails)
    assert res.exit_code == 1 and "--dataset" in res.output and "already holds" not in res.output
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    _one_line_error(res, "--resume and --overwrite")


def test_export_overwrite_replaces_atomically_and_a_failed_export_leaves_the_old_one(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rankwise.cli import app
    from tests._serving_models import tiny_cross_encoder_dir

    model = tiny_cross_encoder_dir(tmp_path / "model")
    out = tmp_path / "onnx"
    args = ["export", "--model-dir", str(model), "--output", str(out), "--json"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = _snapshot(out)
    _one_line_error(CliRunner().invoke(app, args), str(out), "--overwrite")

    import rankwise.serving.export as export

    def broken(model_dir, output_dir, **kw):  # noqa: ANN001, ANN202 - dies halfway through writing
        (Path(output_dir) / "model.onnx").write_bytes(b"half")
        raise ValueError("simulated failure")

    monkeypatch.setattr(export, "export_model", broken)
    _one_line_error(CliRunner().invoke(app, [*args, "--overwrite"]), "simulated failure")
    assert _snapshot(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["model", "onnx"]
    monkeypatch.undo()
    res = CliRunner().invoke(app, ["export", "--model-dir", str(model), "--output", str(out), "--overwrite", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "onnx"] and (out / "serving.json").is_file()


def test_check_output_and_atomic_dir(tmp_path):
    from rankwise.core.outputs import OutputError, atomic_dir, atomic_file, check_output

    (tmp_path / "f").write_text("x")
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "new", False, "dir") == tmp_path / "new"
    assert check_output(tmp_path / "empty", False, "dir") == tmp_path / "empty"
    assert check_output(tmp_path / "f", True, "file") == tmp_path / "f"
    for path, overwrite, kind, needle in [
        (tmp_path / "f", False, "file", "exists; pass --overwrite"), (tmp_path / "f", True, "dir", "not a directory"),
        (tmp_path / "empty", True, "file", "is a directory"), (tmp_path / "f" / "sub", True, "dir", "is a file"),
    ]:
        with pytest.raises(OutputError, match=needle):
            check_output(path, overwrite, kind)
    (tmp_path / "empty" / "metrics.json").write_text("{}")
    assert check_output(tmp_path / "empty", False, "dir", contents=("run.trec",))
    with pytest.raises(ValueError, match=r"already holds outputs \(metrics.json\)"):
        check_output(tmp_path / "empty", False, "dir", contents=("run.trec", "metrics.json"))

    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "empty") as staging:
        (staging / "half").write_text("x")
        raise RuntimeError
    with atomic_dir(tmp_path / "empty") as staging:
        (staging / "whole").write_text("new")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["whole"]
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f"]  # no staging left behind


# -- benchmark probes (benchmarks/reliability.py): concurrent jobs, disk full, leftovers, missing weights ------
def _hash_reranker(monkeypatch) -> None:
    """The CLI's ``Reranker.load`` gives a HashRanker: the job runs without a real model directory."""
    from rankwise.serving.api import Reranker
    from tests._serving_models import HashRanker

    monkeypatch.setattr(Reranker, "load", lambda *a, **k: HashRanker())


def test_rerank_second_job_on_the_same_output_is_refused_naming_the_lock(tmp_path, monkeypatch):
    import fcntl

    _hash_reranker(monkeypatch)
    job = _job(tmp_path, TREC)
    out = tmp_path / "out.trec"
    with open(tmp_path / "out.trec.lock", "a") as held:  # a first job is running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in ((), ("--resume",), ("--overwrite",)):
            _one_line_error(_rerank_cli(job, out, *extra), "out.trec.lock", "another job is writing")
        assert not out.exists() and not (tmp_path / "out.trec.parts").exists()
    assert _rerank_cli(job, out).exit_code == 0  # the lock is gone with its holder
    assert len(out.read_text().splitlines()) == 8


def test_batch_job_started_while_another_runs_on_the_same_output_is_refused(tmp_path):
    from rankwise.core.outputs import OutputError
    from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank
    from tests._serving_models import HashRanker

    job = _job(tmp_path, TREC)
    config = BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], tmp_path / "out.trec", chunk_queries=1)
    clean = run_batch_rerank(BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], tmp_path / "clean.trec"),
                             HashRanker, "hash").output.read_bytes()
    refusals = []

    def second_job(chunk: int) -> None:  # runs while the first job holds its lock
        for cfg in (config, BatchRerankConfig(**{**config.__dict__, "resume": True})):
            with pytest.raises(OutputError, match=r"out\.trec\.lock: another job is writing") as err:
                run_batch_rerank(cfg, HashRanker, "hash")
            refusals.append(str(err.value))

    run_batch_rerank(config, HashRanker, "hash", on_chunk=second_job)
    assert len(refusals) == 4 and (tmp_path / "out.trec").read_bytes() == clean


@pytest.mark.parametrize("failing", ["chunk-00001.parquet", "manifest.json"])
def test_rerank_disk_full_is_one_line_and_the_job_resumes_byte_identical(tmp_path, monkeypatch, failing):
    import errno

    import rankwise.core.chunks as chunks
    import rankwise.serving.batch as batch

    _hash_reranker(monkeypatch)
    job = _job(tmp_path, TREC)
    assert _rerank_cli(job, tmp_path / "clean.trec", "--chunk-queries", "1").exit_code == 0
    real = batch.write_atomic
    writes = []

    def full_disk(path, data):  # noqa: ANN001, ANN202 - the second write of ``failing`` finds the disk full
        writes.append(Path(path).name)
        if Path(path).name == failing and writes.count(failing) == (1 if failing.startswith("chunk") else 2):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(batch, "write_atomic", full_disk)  # the manifest
    monkeypatch.setattr(chunks, "write_atomic", full_disk)  # the chunk files
    out = tmp_path / "out.trec"
    res = _rerank_cli(job, out, "--chunk-queries", "1")
    _one_line_error(res, f"out.trec.parts/{failing}", "No space left on device", "resume")
    parts = tmp_path / "out.trec.parts"
    assert not out.exists() and list(json.loads((parts / "manifest.json").read_text())["chunks"]) == ["0"]
    assert sorted(p.name for p in parts.iterdir() if p.name.endswith(".tmp")) == []  # no partial file left
    monkeypatch.setattr(batch, "write_atomic", real)  # space is back
    monkeypatch.setattr(chunks, "write_atomic", real)
    res = _rerank_cli(job, out, "--chunk-queries", "1", "--resume")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (tmp_path / "clean.trec").read_bytes()


def test_rerank_refused_input_leaves_no_parts_directory(tmp_path):
    job = _job(tmp_path, TREC + "q3 Q0 d1 1 bm25\n")
    _one_line_error(_rerank_cli(job, tmp_path / "out.trec"), "cands.trec:9")
    assert not (tmp_path / "out.trec").exists() and not (tmp_path / "out.trec.parts").exists()


@pytest.mark.parametrize("command", ["export", "rerank"])
def test_missing_weight_file_is_a_one_line_error_naming_the_directory(tmp_path, command):
    from typer.testing import CliRunner

    from rankwise.cli import app
    from tests._serving_models import tiny_cross_encoder_dir

    model = tiny_cross_encoder_dir(tmp_path / "ce")
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    if command == "export":
        res = CliRunner().invoke(app, ["export", "--model-dir", str(model), "--output", str(tmp_path / "onnx")])
    else:
        job = _job(tmp_path, TREC)
        job["model"] = model
        res = _rerank_cli(job, tmp_path / "out.trec")
    _one_line_error(res, str(model))
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "out.trec").exists()


def test_debug_flag_adds_the_traceback_behind_the_one_line_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rankwise.cli import app

    monkeypatch.delenv("RANKWISE_DEBUG", raising=False)
    args = ["eval", "beir", "--dataset", str(tmp_path / "absent"), "--output-dir", str(tmp_path / "out")]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 1 and "Traceback" not in plain.output and plain.output.strip().startswith("error:")
    debug = CliRunner().invoke(app, ["--debug", *args])
    assert debug.exit_code == 1 and "Traceback" in debug.output and debug.output.strip().splitlines()[-1].startswith("error:")
    monkeypatch.delenv("RANKWISE_DEBUG", raising=False)
