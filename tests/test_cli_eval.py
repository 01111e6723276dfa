"""`rankwise eval` end to end on real data: the documented examples, outputs and error exits."""

from __future__ import annotations

import gzip
import json

import pytest

from typer.testing import CliRunner

from rankwise.cli import app

runner = CliRunner()


def test_cli_eval_beir_default_fuses_bi_encoder_with_bm25(scifact_small, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--top-k", "30",
                                 "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reranker"] == "bi-encoder" and metrics["fusion"] == "zscore" and metrics["fusion_weight"] == 0.3
    assert 0.0 < metrics["first_stage_ndcg@10"] < 1.0 and 0.0 < metrics["ndcg@10"] <= 1.0
    assert metrics["ndcg@10"] != metrics["first_stage_ndcg@10"]  # the reranker changed the order
    assert {"recall@100", "mrr@10", "first_stage_s", "rerank_s", "docs_per_s"} <= set(metrics)
    run = [line.split() for line in (out / "run.trec").read_text().splitlines()]
    per_query = {}
    for qid, _, _, rank, *_ in run:
        per_query.setdefault(qid, []).append(int(rank))
    assert len(per_query) == 20
    assert all(ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= 30 for ranks in per_query.values())


def test_cli_eval_beir_dense_flat_and_hnsw_agree(scifact_small, tmp_path):
    ndcg = {}
    for index in ("flat", "hnsw"):
        out = tmp_path / index
        result = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--retriever", "dense",
                                     "--dense-index", index, "--reranker", "none", "--top-k", "30", "--output-dir", str(out), "--json"])
        assert result.exit_code == 0, result.output
        ndcg[index] = json.loads((out / "metrics.json").read_text())["ndcg@10"]
    assert ndcg["flat"] > 0.5
    assert abs(ndcg["flat"] - ndcg["hnsw"]) < 0.02


def test_cli_eval_bad_dataset_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "broken"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{oops\n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    (bad / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    result = runner.invoke(app, ["eval", "beir", "--dataset", str(bad), "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "corpus.jsonl:2: malformed JSON" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_cli_eval_bright_removes_excluded_ids(data_dir, tmp_path):
    examples = [json.loads(line) for line in gzip.open(data_dir / "bright/biology/examples.jsonl.gz", "rt")]
    gold = sorted({d for e in examples for d in e["gold_ids"]})
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d, "content": d.replace("_", " ").replace("/", " ")}) + "\n" for d in gold))
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "bright", "--domain", "biology", "--documents", str(docs),
                                 "--reranker", "none", "--top-k", "20", "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["queries"] == len(examples) and 0.0 < metrics["ndcg@10"] <= 1.0
    run = [line.split() for line in (out / "run.trec").read_text().splitlines()]
    excluded = {(e["id"], d) for e in examples for d in e["excluded_ids"]}
    assert not any((qid, docid) in excluded for qid, _, docid, *_ in run)


def test_cli_help_lists_every_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("train", "eval", "recommend", "models"):
        assert group in result.output


def test_cli_eval_unknown_reranker_is_one_line(scifact_small, tmp_path):
    """Run as a user would (a subprocess, offline): one error line on stderr, exit 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rankwise.cli", "eval", "beir", "--dataset", str(scifact_small), "--reranker",
         "no-such-org/no-such-model", "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot load reranker 'no-such-org/no-such-model'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_eval_beir_scores_an_onnx_export_like_its_pytorch_directory(scifact_small, tmp_path):
    from rankwise.serving.export import export_model
    from tests._serving_models import tiny_cross_encoder_dir

    model = tiny_cross_encoder_dir(tmp_path / "model")
    export_model(model, tmp_path / "onnx", runtime="onnxruntime")
    got = {}
    for name, directory in (("pytorch", model), ("onnx", tmp_path / "onnx")):
        out = tmp_path / f"out-{name}"
        result = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--top-k", "20", "--reranker", str(directory),
                                     "--fusion", "none", "--output-dir", str(out), "--json"])
        assert result.exit_code == 0, result.output
        got[name] = json.loads((out / "metrics.json").read_text())
    assert got["onnx"]["ndcg@10"] == pytest.approx(got["pytorch"]["ndcg@10"], abs=1e-3)
    assert got["onnx"]["ndcg@10"] != got["pytorch"]["first_stage_ndcg@10"]  # the export really reranked


def test_cli_eval_beir_fuses_several_rerankers(scifact_small, tmp_path):
    from tests._serving_models import tiny_cross_encoder_dir

    model = tiny_cross_encoder_dir(tmp_path / "model")
    out = tmp_path / "out"
    args = ["eval", "beir", "--dataset", str(scifact_small), "--top-k", "20", "--reranker", "bi-encoder", "--reranker", str(model)]
    result = runner.invoke(app, [*args, "--output-dir", str(out), "--json"])
    assert result.exit_code == 1 and "--fusion-weights or --fit-queries" in result.output
    result = runner.invoke(app, [*args, "--fusion-weights", "0.3,0.7,0", "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    three = json.loads((out / "metrics.json").read_text())
    assert three["reranker"] == f"bi-encoder+{model}" and three["fusion_weights"] == [0.3, 0.7, 0.0]
    result = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--top-k", "20", "--fusion-weight", "0.3",
                                 "--output-dir", str(tmp_path / "two"), "--json"])
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert three["ndcg@10"] == pytest.approx(two["ndcg@10"], abs=1e-9)  # a zero weight on the third run changes nothing


def test_fit_pipeline_fusion_prefers_the_informative_reranker(scifact_small):
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.eval.pipeline import PipelineConfig, fit_pipeline_fusion

    ds = load_beir(scifact_small, "test")
    config = PipelineConfig(top_k=20, reranker="bi-encoder")
    weights, value = fit_pipeline_fusion({d: ds.doc_text(d) for d in ds.corpus}, ds.queries, ds.qrels, config, step=0.1)
    assert len(weights) == 2 and abs(sum(weights) - 1) < 1e-9 and 0.0 < value <= 1.0


def test_cli_eval_device_and_dtype_reach_the_pytorch_reranker(scifact_small, tmp_path, monkeypatch):
    from rankwise.eval import pipeline
    from tests._serving_models import tiny_cross_encoder_dir

    model = tiny_cross_encoder_dir(tmp_path / "model")
    seen = []
    real = pipeline.load_reranker
    monkeypatch.setattr(pipeline, "load_reranker", lambda name, device="cpu", dtype=None, **kw: (seen.append((device, dtype)), real(name, device, dtype, **kw))[1])
    result = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--top-k", "5", "--reranker", str(model),
                                 "--device", "cpu", "--dtype", "bf16", "--output-dir", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [("cpu", "bf16")]
    bad = runner.invoke(app, ["eval", "beir", "--dataset", str(scifact_small), "--device", "tpu", "--output-dir", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "--device" in bad.output
