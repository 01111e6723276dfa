"""Batch reranking: chunks, manifest, resume after SIGKILL, corrupted chunks, Ray, CLI."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank, scan_candidates
from tests._serving_models import HashRanker, scifact_slice, tiny_cross_encoder_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("batch")
    scifact = data_dir / "beir" / "scifact"
    return {"candidates": scifact_slice(data_dir, base), "queries": scifact / "queries.jsonl.gz",
            "corpus": scifact / "corpus.jsonl.gz"}


def _config(inputs, output: Path, **kw) -> BatchRerankConfig:
    return BatchRerankConfig(inputs["candidates"], inputs["queries"], inputs["corpus"], output, **kw)


def test_batch_output_is_each_query_reranked_in_chunks(inputs, tmp_path):
    result = run_batch_rerank(_config(inputs, tmp_path / "out.trec", chunk_queries=5, top_k=4), HashRanker, "hash")
    assert (result.queries, result.docs, result.chunks, result.chunks_reused) == (12, 48, 3, 0)
    lines = (tmp_path / "out.trec").read_text().splitlines()
    assert len(lines) == 48 and all(len(line.split()) == 6 for line in lines)
    run = scan_candidates(tmp_path / "out.trec").collect()
    # Order of queries = order of first appearance in the candidates; ranks 1..4 by descending score.
    first = scan_candidates(inputs["candidates"]).select("qid").unique(maintain_order=True).collect()["qid"].to_list()
    assert run["qid"].unique(maintain_order=True).to_list() == first
    for _, g in run.group_by("qid"):
        assert g["rank"].to_list() == [1, 2, 3, 4]
        assert g["score"].to_list() == sorted(g["score"].to_list(), reverse=True)
    manifest = json.loads((tmp_path / "out.trec.parts" / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["chunks"]) == ["0", "1", "2"]


def test_batch_killed_with_sigkill_then_resumed_is_byte_identical(inputs, tmp_path):
    clean = tmp_path / "clean.trec"
    run_batch_rerank(_config(inputs, clean, chunk_queries=1), HashRanker, "hash")
    killed = tmp_path / "killed.trec"
    script = (
        "import sys; from pathlib import Path\n"
        "from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank\n"
        "from tests._serving_models import HashRanker\n"
        f"cfg = BatchRerankConfig(Path({str(inputs['candidates'])!r}), Path({str(inputs['queries'])!r}), "
        f"Path({str(inputs['corpus'])!r}), Path({str(killed)!r}), chunk_queries=1)\n"
        "run_batch_rerank(cfg, lambda: HashRanker(delay_s=0.3), 'hash', on_chunk=lambda i: print(i, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    done = [proc.stdout.readline() for _ in range(4)]  # wait until 4 chunks are on disk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and all(d.strip() for d in done)
    parts = killed.with_name(killed.name + ".parts")
    manifest = json.loads((parts / "manifest.json").read_text())
    assert 4 <= len(manifest["chunks"]) < 12 and not killed.exists()
    # Corrupt one finished chunk (flip bytes) and truncate another: both must be detected and redone.
    recorded = sorted(manifest["chunks"], key=int)
    corrupt, partial = parts / manifest["chunks"][recorded[0]]["file"], parts / manifest["chunks"][recorded[1]]["file"]
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    partial.write_bytes(partial.read_bytes()[:20])
    scored: list[str] = []
    result = run_batch_rerank(_config(inputs, killed, chunk_queries=1, resume=True),
                              lambda: HashRanker(log=scored), "hash")
    assert killed.read_bytes() == clean.read_bytes()
    assert result.chunks_reused == len(recorded) - 2
    assert len(scored) == 12 - result.chunks_reused  # nothing verified was scored twice
    # A finished job resumed again does no work and leaves the output untouched.
    again: list[str] = []
    run_batch_rerank(_config(inputs, killed, chunk_queries=1, resume=True), lambda: HashRanker(log=again), "hash")
    assert again == [] and killed.read_bytes() == clean.read_bytes()


def test_batch_parquet_resume_after_crash_is_byte_identical(inputs, tmp_path):
    clean, crashed = tmp_path / "clean.parquet", tmp_path / "crashed.parquet"
    run_batch_rerank(_config(inputs, clean, chunk_queries=3), HashRanker, "hash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_batch_rerank(_config(inputs, crashed, chunk_queries=3), lambda: HashRanker(fail_after=7), "hash")
    result = run_batch_rerank(_config(inputs, crashed, chunk_queries=3, resume=True), HashRanker, "hash")
    assert result.chunks_reused == 2
    assert crashed.read_bytes() == clean.read_bytes()
    assert pl.read_parquet(crashed).columns == ["qid", "docid", "score", "rank"]


def test_batch_refuses_to_mix_jobs(inputs, tmp_path):
    out = tmp_path / "out.trec"
    with pytest.raises(RuntimeError):
        run_batch_rerank(_config(inputs, out, chunk_queries=2), lambda: HashRanker(fail_after=3), "hash")
    with pytest.raises(FileExistsError, match="pass resume"):
        run_batch_rerank(_config(inputs, out, chunk_queries=2), HashRanker, "hash")
    with pytest.raises(ValueError, match="top_k"):
        run_batch_rerank(_config(inputs, out, chunk_queries=2, top_k=3, resume=True), HashRanker, "hash")
    with pytest.raises(ValueError, match="model"):
        run_batch_rerank(_config(inputs, out, chunk_queries=2, resume=True), HashRanker, "other-model")
    result = run_batch_rerank(_config(inputs, out, chunk_queries=2, overwrite=True), HashRanker, "hash")
    assert result.chunks_reused == 0 and out.is_file()


def test_scan_candidates_reads_trec_parquet_and_jsonl_alike(inputs, tmp_path):
    trec = scan_candidates(inputs["candidates"]).collect()
    trec.write_parquet(tmp_path / "c.parquet")
    trec.drop("rank").write_ndjson(tmp_path / "c.jsonl")
    for path in (tmp_path / "c.parquet", tmp_path / "c.jsonl"):
        assert scan_candidates(path).collect().sort(["qid", "rank"]).equals(trec.sort(["qid", "rank"]))
    (tmp_path / "bad.trec").write_text("1 Q0 d1 1\n")
    with pytest.raises(ValueError, match=r"bad.trec:1: expected a TREC run line"):
        scan_candidates(tmp_path / "bad.trec")


@pytest.fixture(scope="module")
def ce_onnx(tmp_path_factory) -> Path:
    from rankwise.serving.export import export_model

    base = tmp_path_factory.mktemp("ce")
    export_model(tiny_cross_encoder_dir(base / "model"), base / "onnx")
    return base / "onnx"


def test_cli_export_and_rerank_documented_flags(inputs, ce_onnx, tmp_path):
    from rankwise.cli import app

    runner = CliRunner()
    src = tiny_cross_encoder_dir(tmp_path / "model")
    res = runner.invoke(app, ["export", "--model-dir", str(src), "--output", str(tmp_path / "onnx"), "--quantize", "int8", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["precision"] == "int8"
    res = runner.invoke(app, ["export", "--model-dir", str(src), "--output", str(tmp_path / "nbits"), "--quantize", "int8-blockwise", "--fp16"])
    assert res.exit_code == 1 and "--quantize int8-blockwise and --fp16 exclude each other" in res.output
    args = ["rerank", "--model", str(ce_onnx), "--candidates", str(inputs["candidates"]), "--corpus", str(inputs["corpus"]),
            "--queries", str(inputs["queries"]), "--output", str(tmp_path / "ce.trec"), "--top-k", "3", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["docs"] == 36 and summary["queries"] == 12
    res = runner.invoke(app, args)  # the job exists: one clear line, non-zero exit
    assert res.exit_code == 1 and "pass resume" in res.output
    res = runner.invoke(app, args[:-3] + ["--output", str(tmp_path / "x.trec"), "--model", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_ray_engine_matches_local_engine_on_two_workers(inputs, ce_onnx, tmp_path):
    ray = pytest.importorskip("ray")
    from rankwise.serving.api import Reranker

    factory = functools.partial(Reranker.load, ce_onnx, device="cpu", threads=1)
    local = run_batch_rerank(_config(inputs, tmp_path / "local.parquet", chunk_queries=4, top_k=3), factory, "ce")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        start = time.perf_counter()
        got = run_batch_rerank(_config(inputs, tmp_path / "ray.parquet", chunk_queries=4, top_k=3, engine="ray", workers=2),
                               factory, "ce")
        assert time.perf_counter() - start < 300  # a hang guard: 142 s once with a training job on both cores
    finally:
        ray.shutdown()
    assert got.docs == local.docs == 36
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
