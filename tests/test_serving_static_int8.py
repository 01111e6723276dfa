"""Static QDQ int8 in onnxruntime: calibrated activation ranges, per-channel weights, exact head on top."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from collections import Counter

import numpy as np
import onnx
import pytest

from rankwise.serving.api import Reranker
from rankwise.serving.export import export_model
from tests._serving_models import tiny_cross_encoder_dir

QUERIES = ["vitamin d and bone density", "does smoking cause cancer", "bm25 ranking", "neural rerankers"]
DOCS = ["Low vitamin D is linked to lower bone density.", "Smoking raises the risk of lung cancer.",
        "BM25 scores documents by term frequency.", "A fish swims in the sea.", "Cross-encoders read query and document together."]
CALIBRATION = [(q, d) for q in QUERIES for d in DOCS] * 2


@pytest.fixture(scope="module")
def ce(tmp_path_factory):
    return tiny_cross_encoder_dir(tmp_path_factory.mktemp("static") / "ce", initializer_range=0.3)


def test_static_int8_export_is_qdq_close_to_fp32_and_thread_safe(ce, tmp_path):
    out = tmp_path / "static"
    result = export_model(ce, out, quantize="int8-static", calibration_pairs=CALIBRATION, exact_head=2)
    meta = json.loads((out / "serving.json").read_text())
    assert result.precision == meta["precision"] == "int8-static" and meta["exact_head"]["k"] == 2
    ops = Counter(n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    want = Reranker.load(ce, device="cpu").score(QUERIES[0], DOCS)
    rr = Reranker.load(out, device="cpu", threads=1, batch_size=2)
    got = rr.score(QUERIES[0], DOCS)
    assert np.corrcoef(got, want)[0, 1] > 0.9
    requests = [(QUERIES[i % 4], DOCS[i % 5:] + DOCS[: i % 5]) for i in range(24)]
    sequential = [rr.rerank(q, d, top_k=3) for q, d in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda r: rr.rerank(*r, top_k=3), requests)) == sequential


def test_static_int8_needs_calibration_pairs(ce, tmp_path):
    with pytest.raises(ValueError, match="int8-static"):
        export_model(ce, tmp_path / "x", quantize="int8-static")
