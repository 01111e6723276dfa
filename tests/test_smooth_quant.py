"""SmoothQuant and mixed precision before dynamic int8 (serving/smooth_quant.py, serving/mixed_precision.py,
export --quantize int8-smooth, --fp32-ops)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.serving.export import PARITY_PAIRS, export_model, read_pairs_file
from rankwise.serving.onnx_ranker import OnnxRanker
from rankwise.serving.smooth_quant import smooth_for_dynamic_int8, weight_matmuls
from tests._serving_models import outlier_cross_encoder_dir

QUERIES = ["vitamin d and bones", "what is bm25", "smoking and lung cancer", "reranking latency"]
DOCS = [d for _, d in PARITY_PAIRS] + [f"bone density and vitamin d trial {i} " * (i + 1) for i in range(12)]
CALIBRATION = [(q, d) for q in QUERIES for d in DOCS]  # 68 pairs
TEST_DOCS = [f"cohort {i}: lung function after {i} years of vitamin d " * (1 + i % 4) for i in range(16)]


@pytest.fixture(scope="module")
def outlier_ce_dir(tmp_path_factory) -> Path:
    return outlier_cross_encoder_dir(tmp_path_factory.mktemp("sq"))


def _fp32_graph(src: Path, out: Path) -> onnx.ModelProto:
    export_model(src, out)
    return onnx.load(str(out / "model.onnx"))


def _feeds(src: Path, pairs) -> list[dict[str, np.ndarray]]:
    ce = CrossEncoder.from_pretrained(src)
    enc = ce.tokenize([q for q, _ in pairs], [d for _, d in pairs])
    return [{k: v.numpy() for k, v in enc.items()}]


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})[0]


def test_smoothing_keeps_the_fp32_function_and_inserts_one_mul_per_smoothed_matmul(outlier_ce_dir, tmp_path):
    model = _fp32_graph(outlier_ce_dir, tmp_path / "fp32")
    before = _run(model, _feeds(outlier_ce_dir, CALIBRATION[:20])[0])
    n_weight_ops = len(weight_matmuls(model))
    choice = smooth_for_dynamic_int8(model, _feeds(outlier_ce_dir, CALIBRATION))
    assert len(choice) == n_weight_ops  # QKV (Attention), attention output, FFN in/out per layer, pooler, head
    smoothed = [name for name, alpha in choice.items() if alpha is not None]
    assert smoothed and any(name.startswith("Attention") for name in smoothed)  # the outlier channel feeds QKV
    muls = [n for n in model.graph.node if n.op_type == "Mul" and n.name.endswith("_smooth")]
    assert len(muls) == len(smoothed)
    onnx.checker.check_model(model)
    after = _run(model, _feeds(outlier_ce_dir, CALIBRATION[:20])[0])
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_int8_smooth_export_is_closer_to_pytorch_than_plain_int8(outlier_ce_dir, tmp_path):
    ref = CrossEncoder.from_pretrained(outlier_ce_dir).score("vitamin d and lung function", TEST_DOCS)
    error = {}
    for quantize in ("int8", "int8-smooth"):
        result = export_model(outlier_ce_dir, tmp_path / quantize, quantize=quantize,
                              calibration_pairs=CALIBRATION if quantize == "int8-smooth" else None)
        assert result.precision == quantize
        scores = OnnxRanker(tmp_path / quantize, device="cpu").score("vitamin d and lung function", TEST_DOCS)
        error[quantize] = float(np.abs(scores - ref).mean())
    assert 0 < error["int8-smooth"] < 0.3 * error["int8"]  # measured 0.011 vs 0.075 (score std 0.24)
    meta = json.loads((tmp_path / "int8-smooth" / "serving.json").read_text())
    assert any(a is not None for a in meta["smoothquant_alpha"].values())
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "int8-smooth" / "model.onnx")).graph.node)
    assert ops["QAttention"] == 2 and ops["MatMulInteger"] == 2 * 3  # the same int8 kernels as plain int8


def test_int8_smooth_needs_calibration_pairs(outlier_ce_dir, tmp_path):
    with pytest.raises(ValueError, match="calibration_pairs"):
        export_model(outlier_ce_dir, tmp_path / "x", quantize="int8-smooth", calibration_pairs=CALIBRATION[:5])
    assert not (tmp_path / "x" / "model.onnx").exists()


def test_read_pairs_file_reads_jsonl_and_parquet_and_names_bad_lines(tmp_path):
    import polars as pl

    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps({"query": q, "doc": d}) for q, d in CALIBRATION[:3]) + "\n")
    assert read_pairs_file(good) == CALIBRATION[:3]
    pl.DataFrame({"query": ["q1"], "doc": ["d1"]}).write_parquet(tmp_path / "pairs.parquet")
    assert read_pairs_file(tmp_path / "pairs.parquet") == [("q1", "d1")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "doc": "b"}\n{"query": "c", "doc": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: empty 'query' or 'doc'"):
        read_pairs_file(bad)
    (tmp_path / "nodoc.jsonl").write_text('{"query": "a", "text": "b"}\n')
    with pytest.raises(ValueError, match=r"nodoc.jsonl: field\(s\) \['doc'\] missing"):
        read_pairs_file(tmp_path / "nodoc.jsonl")
    with pytest.raises(ValueError, match="expected a .jsonl or .parquet"):
        read_pairs_file(tmp_path / "pairs.csv")


def test_cli_export_int8_smooth(outlier_ce_dir, tmp_path):
    from rankwise.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["export", "--model-dir", str(outlier_ce_dir), "--output", str(tmp_path / "a"),
                                  "--quantize", "int8-smooth"])
    assert missing.exit_code == 1 and "needs --calibration" in missing.output
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"query": q, "doc": d}) for q, d in CALIBRATION) + "\n")
    ok = runner.invoke(app, ["export", "--model-dir", str(outlier_ce_dir), "--output", str(tmp_path / "b"),
                             "--quantize", "int8-smooth", "--calibration", str(pairs), "--json"])
    assert ok.exit_code == 0, ok.output
    line = ok.output[ok.output.index('{"output"'):].splitlines()[0]  # after the weight-loading progress bar
    assert json.loads(line)["precision"] == "int8-smooth"


def test_fp32_ops_keeps_the_most_sensitive_matmuls_in_fp32(outlier_ce_dir, tmp_path):
    """The planted outlier channel is the input of each layer's FFN-out MatMul: with one int8 range per
    tensor those two ops carry the error, and mixed precision must find and keep exactly them."""
    ref = CrossEncoder.from_pretrained(outlier_ce_dir).score("vitamin d and lung function", TEST_DOCS)
    plain = export_model(outlier_ce_dir, tmp_path / "int8", quantize="int8")
    mixed = export_model(outlier_ce_dir, tmp_path / "mixed", quantize="int8", calibration_pairs=CALIBRATION, fp32_ops=2)
    assert (plain.precision, mixed.precision) == ("int8", "int8+fp32x2")
    error = {name: float(np.abs(OnnxRanker(tmp_path / name, device="cpu").score("vitamin d and lung function", TEST_DOCS) - ref).mean())
             for name in ("int8", "mixed")}
    assert error["mixed"] < 0.3 * error["int8"]
    meta = json.loads((tmp_path / "mixed" / "serving.json").read_text())
    sens = meta["int8_sensitivity"]
    assert len(sens) == len(weight_matmuls(_fp32_graph(outlier_ce_dir, tmp_path / "fp32")))
    assert meta["fp32_ops"] == sorted(sens, key=sens.get, reverse=True)[:2]
    ffn_out = [n.name for n in onnx.load(str(tmp_path / "fp32" / "model.onnx")).graph.node
               if n.op_type == "MatMul" and "output/dense" in n.name and "attention" not in n.name]
    assert sorted(meta["fp32_ops"]) == sorted(ffn_out), (meta["fp32_ops"], ffn_out)
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "mixed" / "model.onnx")).graph.node)
    assert ops["QAttention"] == 2 and ops["MatMulInteger"] == 2 * 3 - 2


def test_fp32_ops_argument_errors(outlier_ce_dir, tmp_path):
    with pytest.raises(ValueError, match="calibration_pairs"):
        export_model(outlier_ce_dir, tmp_path / "x", quantize="int8", fp32_ops=1)
    with pytest.raises(ValueError, match="fp32_ops=1 needs quantize"):
        export_model(outlier_ce_dir, tmp_path / "x", quantize="int8-blockwise", calibration_pairs=CALIBRATION, fp32_ops=1)
    from rankwise.cli import app

    bad = CliRunner().invoke(app, ["export", "--model-dir", str(outlier_ce_dir), "--output", str(tmp_path / "y"),
                                   "--quantize", "int8", "--fp32-ops", "2"])
    assert bad.exit_code == 1 and "--fp32-ops needs --calibration FILE" in bad.output
