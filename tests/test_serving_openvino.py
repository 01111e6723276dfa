"""OpenVINO engine: export with --runtime openvino (fp32 / bf16 hint, NNCF int8), Reranker.load picks the
runtime from serving.json, parity against PyTorch, thread safety, one-line CLI errors."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from typer.testing import CliRunner

from rankwise.cli import app
from rankwise.core.device import cpu_has_vnni
from rankwise.serving.api import Reranker
from rankwise.serving.export import export_model
from tests._serving_models import tiny_cross_encoder_dir

QUERIES = ["vitamin d and bone density", "does smoking cause cancer", "bm25 ranking", "neural rerankers"]
DOCS = ["Low vitamin D is linked to lower bone density.", "Smoking raises the risk of lung cancer.",
        "BM25 scores documents by term frequency.", "A fish swims in the sea.", "Cross-encoders read query and document together."]
CALIBRATION = [(q, d) for q in QUERIES for d in DOCS] * 2  # 40 pairs


@pytest.fixture(scope="module")
def ce(tmp_path_factory):
    return tiny_cross_encoder_dir(tmp_path_factory.mktemp("ov") / "ce", initializer_range=0.3)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_export_serves_through_reranker_load_with_recorded_parity(ce, tmp_path, precision):
    out = tmp_path / precision
    result = export_model(ce, out, runtime="openvino", openvino_precision=precision)
    meta = json.loads((out / "serving.json").read_text())
    assert meta["runtime"] == "openvino" and (out / meta["openvino_file"]).is_file() and meta["precision"] == "fp32"
    assert meta["openvino_precision"] in ("f32", "bf16")  # what OpenVINO compiled for, as it reports it
    assert result.parity_max_abs_diff == meta["parity_max_abs_diff"]
    pytorch = Reranker.load(ce, device="cpu")
    served = Reranker.load(out, device="cpu")
    assert served.backend == "onnx" and "OpenVINO" in served._ranker.session.providers[0]
    want, got = pytorch.score(QUERIES[0], DOCS), served.score(QUERIES[0], DOCS)
    tol = 1e-4 if meta["openvino_precision"] == "f32" else 5e-2 * (np.abs(want).max() + 1)
    np.testing.assert_allclose(got, want, atol=tol)
    assert np.argmax(got) == np.argmax(want)


def test_openvino_nncf_int8_export_is_thread_safe(ce, tmp_path):
    out = tmp_path / "int8"
    export_model(ce, out, runtime="openvino", quantize="int8", calibration_pairs=CALIBRATION, openvino_precision="f32")
    meta = json.loads((out / "serving.json").read_text())
    assert meta["precision"] == "int8" and meta["openvino_quantization"] == "nncf-int8"
    # without VNNI, full-range int8 weights saturate the CPU's int16 pair sums (corr 0.78 here): 7-bit there
    assert meta["int8_weight_range"] == ([-127, 127] if cpu_has_vnni() else [-64, 64])
    rr = Reranker.load(out, device="cpu", threads=1, batch_size=2)
    want = Reranker.load(ce, device="cpu").score(QUERIES[1], DOCS)
    got = rr.score(QUERIES[1], DOCS)
    assert np.corrcoef(got, want)[0, 1] > 0.9  # int8: close to fp32, not equal
    requests = [(QUERIES[i % 4], DOCS[i % 5:] + DOCS[: i % 5]) for i in range(32)]
    sequential = [rr.rerank(q, d, top_k=3) for q, d in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda r: rr.rerank(*r, top_k=3), requests)) == sequential


def test_openvino_cli_export_and_one_line_errors(ce, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["export", "--model-dir", str(ce), "--output", str(tmp_path / "cli"), "--runtime", "openvino", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["kind"] == "cross-encoder"
    bad = runner.invoke(app, ["export", "--model-dir", str(ce), "--output", str(tmp_path / "bad"), "--runtime", "openvino",
                              "--quantize", "int8"])
    assert bad.exit_code == 1 and "calibration_pairs" in bad.output and len(bad.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["export", "--model-dir", str(ce), "--output", str(tmp_path / "bad2"), "--runtime", "openvino", "--fp16"])
    assert bad.exit_code == 1 and "openvino" in bad.output


def test_openvino_serves_the_erank_prompt_scorer_in_f32_and_nncf_int8_weights(tmp_path):
    from rankwise.testing import tiny_erank_dir

    erank = tiny_erank_dir(tmp_path / "erank", QUERIES + DOCS)
    want = Reranker.load(erank, device="cpu").score(QUERIES[0], DOCS)
    export_model(erank, tmp_path / "f32", runtime="openvino", openvino_precision="f32")
    meta = json.loads((tmp_path / "f32" / "serving.json").read_text())
    assert meta["kind"] == "erank" and meta["runtime"] == "openvino" and meta["openvino_precision"] == "f32"
    got = Reranker.load(tmp_path / "f32", device="cpu").score(QUERIES[0], DOCS)
    np.testing.assert_allclose(got, want, atol=1e-3)
    export_model(erank, tmp_path / "int8", runtime="openvino", quantize="int8", openvino_precision="f32")  # data-free
    meta = json.loads((tmp_path / "int8" / "serving.json").read_text())
    assert meta["openvino_quantization"] == "nncf-int8-weights" and meta["precision"] == "int8-weights"
    assert meta["shared_prefix"]  # the default graph: OpenVINO's full int8 of it fails to compile, int8 weights serve it
    int8 = Reranker.load(tmp_path / "int8", device="cpu").score(QUERIES[0], DOCS)
    assert int8.shape == want.shape and np.all((int8 >= 0) & (int8 <= 10))
    np.testing.assert_allclose(int8, want, atol=0.05)  # int8 weights, f32 activations: close to fp32
    from rankwise.core.model_dir import ModelDirError

    with pytest.raises(ModelDirError, match="int8-static"):  # onnxruntime's calibrator fails on the LLM graph
        export_model(erank, tmp_path / "static", quantize="int8-static", calibration_pairs=CALIBRATION)


def test_default_export_is_served_by_openvino_and_keeps_a_fused_onnx_graph_for_onnxruntime(ce, tmp_path):
    """``runtime="auto"`` (the default) picks the serving benchmark's winner for an fp32 reranker:
    OpenVINO; its model.onnx stays the fused fp32 graph, which onnxruntime serves on demand (and on CUDA)."""
    out = tmp_path / "default"
    result = export_model(ce, out)
    meta = json.loads((out / "serving.json").read_text())
    assert meta["runtime"] == "openvino" and result.runtime.startswith("openvino (")
    assert meta["fused_ops"]  # the onnxruntime graph is fused; OpenVINO read the plain one
    assert not (out / "model.onnx.data").exists()  # the IR's .bin did not push the graph to external data
    want = Reranker.load(ce, device="cpu").score(QUERIES[2], DOCS)
    served = Reranker.load(out, device="cpu")
    assert "OpenVINO" in served._ranker.session.providers[0]
    assert np.argmax(served.score(QUERIES[2], DOCS)) == np.argmax(want)
    exact = Reranker.load(out, device="cpu", runtime="onnxruntime")
    assert exact._ranker.session.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(exact.score(QUERIES[2], DOCS), want, atol=1e-4)
    quantized = export_model(ce, tmp_path / "int8", quantize="int8")  # int8 is onnxruntime's: auto keeps it there
    assert quantized.runtime == "onnxruntime"
    assert json.loads((tmp_path / "int8" / "serving.json").read_text())["runtime"] == "onnxruntime"
    with pytest.raises(ValueError, match="no OpenVINO IR"):
        Reranker.load(tmp_path / "int8", device="cpu", runtime="openvino")


def test_serving_runtime_rules(tmp_path, monkeypatch):
    import onnxruntime as ort

    from rankwise.serving.export import default_runtime
    from rankwise.serving.runtime import serving_runtime

    ov = {"runtime": "openvino", "openvino_file": "openvino_model.xml"}
    assert serving_runtime(ov, "auto", "cpu", tmp_path) == "openvino"
    assert serving_runtime(ov, "auto", "cuda", tmp_path) == "onnxruntime"  # OpenVINO serves the CPU only
    assert serving_runtime(ov, "onnxruntime", "cpu", tmp_path) == "onnxruntime"
    assert serving_runtime({"runtime": "onnxruntime"}, "auto", "cpu", tmp_path) == "onnxruntime"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert serving_runtime(ov, "auto", "auto", tmp_path) == "onnxruntime"
    with pytest.raises(ValueError, match="runtime must be"):
        serving_runtime(ov, "tensorrt", "cpu", tmp_path)
    assert default_runtime(True) == "openvino"
    assert default_runtime(False) == "onnxruntime"  # recommender towers
    assert default_runtime(True, quantize="int8-smooth") == default_runtime(True, fp16=True) == "onnxruntime"
    assert default_runtime(True, exact_head=4) == default_runtime(True, fp32_ops=2) == "onnxruntime"


def test_rerank_cli_runtime_choice_and_errors(ce, data_dir, tmp_path):
    """``rankwise rerank --runtime``: a PyTorch directory refuses it; an OpenVINO export serves either engine."""
    from tests._serving_models import scifact_slice

    out = tmp_path / "ov"
    export_model(ce, out)
    scifact = data_dir / "beir" / "scifact"
    runner = CliRunner()
    common = ["rerank", "--candidates", str(scifact_slice(data_dir, tmp_path, n_queries=3)), "--corpus",
              str(scifact / "corpus.jsonl.gz"), "--queries", str(scifact / "queries.jsonl.gz"), "--json"]
    runs = {}
    for runtime in ("openvino", "onnxruntime"):
        res = runner.invoke(app, [*common, "--model", str(out), "--output", str(tmp_path / f"{runtime}.trec"), "--runtime", runtime])
        assert res.exit_code == 0, res.output
        runs[runtime] = (tmp_path / f"{runtime}.trec").read_text().splitlines()
    assert len(runs["openvino"]) == len(runs["onnxruntime"]) > 0
    bad = runner.invoke(app, [*common, "--model", str(ce), "--output", str(tmp_path / "pt.trec"), "--runtime", "openvino"])
    assert bad.exit_code == 1 and "PyTorch directory" in bad.output
    bad = runner.invoke(app, [*common, "--model", str(out), "--output", str(tmp_path / "x.trec"), "--runtime", "tensorrt"])
    assert bad.exit_code == 1 and "auto|onnxruntime|openvino" in bad.output


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_erank_shared_prefix_export_is_thread_safe(tmp_path, runtime):
    """Each call carries its own query's prefix feed: eight threads over mixed queries return the
    sequential results, on either runtime."""
    from rankwise.testing import tiny_erank_dir

    erank = tiny_erank_dir(tmp_path / "erank", QUERIES + DOCS)
    export_model(erank, tmp_path / "out", runtime=runtime, openvino_precision="f32")
    rr = Reranker.load(tmp_path / "out", device="cpu", threads=1, batch_size=2)
    requests = [(QUERIES[i % 4], DOCS[i % 5:] + DOCS[: i % 5]) for i in range(24)]
    sequential = [rr.score(q, d) for q, d in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for got, want in zip(pool.map(lambda r: rr.score(*r), requests), sequential):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_export_cli_share_prefix_flag(tmp_path):
    from rankwise.testing import tiny_erank_dir

    erank = tiny_erank_dir(tmp_path / "erank", QUERIES + DOCS)
    runner = CliRunner()
    for flag, shared in (("--share-prefix", True), ("--no-share-prefix", False)):
        out = tmp_path / flag
        res = runner.invoke(app, ["export", "--model-dir", str(erank), "--output", str(out), "--runtime", "onnxruntime", flag])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "serving.json").read_text())["shared_prefix"] is shared
