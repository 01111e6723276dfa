"""benchmarks/serving_latency.py's peer-backend plumbing and its speed/quality plot, without the peer venv.

The peer worker runs here with this venv's python: sentence-transformers is installed but optimum is
not, so every peer backend must come back as a named skip while the JSON-lines protocol still works.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._bench import BENCHMARKS, bench_module

from rankwise.testing import tiny_cross_encoder_dir

@pytest.fixture(scope="module")
def bench():
    with bench_module("serving_latency") as module:
        yield module

def test_peer_worker_reports_a_missing_backend_as_a_skip_and_answers_over_json_lines(tmp_path):
    model = tiny_cross_encoder_dir(tmp_path / "ce")
    proc = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / "_peer_worker.py"), "--model-dir", str(model), "--work", str(tmp_path / "w"),
         "--threads", "1", "--backends", "onnx"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        hello = json.loads(proc.stdout.readline())
        assert hello["ready"] is True
        assert hello["versions"]["sentence-transformers"] != "not installed"
        assert "skipped" in hello["backends"]["onnx"] and hello["backends"]["onnx"]["skipped"]
        proc.stdin.write(json.dumps({"backend": "onnx", "pairs": [["q", "d"]]}) + "\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        assert "error" in reply and "onnx" in reply["error"]
        proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

def test_speed_quality_plot_puts_peer_engines_apart_and_falls_back_to_the_timed_subset(bench, tmp_path):
    model = "minilm-l6-cross-encoder"
    rows = [
        {"engine": "onnx-fp32", "model": model, "p50_ms": 2000.0, "docs_per_s": 50.0, "ndcg@10": 0.70},
        {"engine": "openvino-int8", "model": model, "p50_ms": 600.0, "docs_per_s": 160.0, "ndcg@10": 0.69},
        {"engine": "sentence-transformers-openvino", "model": model, "p50_ms": 700.0, "docs_per_s": 140.0, "ndcg@10": 0.70},
        {"engine": "sentence-transformers-onnx-qint8", "model": model, "setting": "x", "skipped": "did not install"},
        {"engine": "onnx-fp32", "model": model, "setting": "quality: 300 queries x top-100", "ndcg@10_minus_fp32": 0.0},
        {"engine": "openvino-int8", "model": model, "setting": "quality: 300 queries x top-100", "ndcg@10_minus_fp32": -0.002},
        {"engine": "pytorch-eager", "model": "sasrec-user-tower+faiss", "p50_ms": 1.0, "requests_per_s": 1000.0},
    ]
    captured = {}
    original = bench.plot_scatter

    def spy(points, x, y, path, **kwargs):
        captured["points"], captured["kwargs"] = points, kwargs
        return original(points, x, y, path, **kwargs)

    bench.plot_scatter = spy
    try:
        out = bench.plot_speed_quality(rows, tmp_path / "plot.png", title="t")
    finally:
        bench.plot_scatter = original
    assert out is not None and out.is_file() and out.stat().st_size > 1000
    points = {p["engine"]: p for p in captured["points"]}
    assert set(points) == {"onnx-fp32", "openvino-int8", "sentence-transformers-openvino"}  # skipped and tower rows left out
    assert points["openvino-int8"]["nDCG@10 - ONNX fp32"] == -0.002 and not points["openvino-int8"]["timed subset only"]
    peer = points["sentence-transformers-openvino"]
    assert peer["library"] == "sentence-transformers" and peer["timed subset only"]
    assert abs(peer["nDCG@10 - ONNX fp32"]) < 1e-12  # 0.70 - 0.70 on the timed subset
    assert captured["kwargs"]["vlines"] == [(-0.005, "0.005 nDCG@10 budget")]

def test_trained_model_is_exported_at_the_benchmark_length_not_its_training_length(bench, tmp_path):
    from rankwise.rankers.cross_encoder import CrossEncoder
    from rankwise.serving.export import export_model

    trained = tmp_path / "trained"
    CrossEncoder.from_pretrained(tiny_cross_encoder_dir(tmp_path / "ce"), max_length=16).save_pretrained(trained)
    src = bench.at_max_length(trained, 48, tmp_path / "src")
    assert json.loads((src / "rankwise.json").read_text())["max_length"] == 48
    export_model(src, tmp_path / "onnx")
    assert json.loads((tmp_path / "onnx" / "serving.json").read_text())["max_length"] == 48
