"""Exact head: int8 scores every document, the shipped fp32 graph rescores the top k (serving/cascade.py,
export --exact-head, OnnxRanker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rankwise.core.model_dir import ModelDirError
from rankwise.serving.api import Reranker
from rankwise.serving.cascade import head_indices, merge_head
from rankwise.serving.export import HEAD_FILE, export_model
from rankwise.serving.onnx_ranker import OnnxRanker
from tests._serving_models import outlier_cross_encoder_dir, tiny_sasrec_dir

QUERY = "vitamin d and lung function"
DOCS = [f"cohort {i}: lung function after {i} years of vitamin d " * (1 + i % 4) for i in range(16)]


@pytest.fixture(scope="module")
def outlier_ce_dir(tmp_path_factory) -> Path:
    """int8 with one range per tensor reorders this tiny cross-encoder's scores (a planted outlier channel)."""
    return outlier_cross_encoder_dir(tmp_path_factory.mktemp("head"))


def test_merge_head_orders_the_head_by_exact_then_the_tail_by_fast():
    fast = np.array([5.0, 4.0, 3.0, 2.5, 1.0])
    head = head_indices(fast, 2)
    assert head.tolist() == [0, 1]
    out = merge_head(fast, head, np.array([1.0, 2.0]))  # fp32 swaps the two and puts both below fast[2]
    assert np.argsort(-out, kind="stable").tolist() == [1, 0, 2, 3, 4]
    assert out[[0, 1]].tolist() == [1.0, 2.0]
    tail = out[[2, 3, 4]]
    assert tail.max() < 1.0 and np.allclose(np.diff(tail), np.diff(fast[[2, 3, 4]]))  # one shift, gaps kept
    untouched = merge_head(fast, head, np.array([9.0, 8.0]))  # head already above the tail: no shift
    assert untouched[[2, 3, 4]].tolist() == [3.0, 2.5, 1.0]
    assert merge_head(fast, head_indices(fast, 0), np.zeros(0)).tolist() == fast.tolist()


def test_exact_head_export_rescores_int8_top_k_with_the_fp32_graph(outlier_ce_dir, tmp_path):
    export_model(outlier_ce_dir, tmp_path / "fp32", runtime="onnxruntime")
    export_model(outlier_ce_dir, tmp_path / "head", quantize="int8", exact_head=4)
    meta = json.loads((tmp_path / "head" / "serving.json").read_text())
    assert meta["precision"] == "int8" and meta["exact_head"] == {"k": 4, "onnx_file": HEAD_FILE, "precision": "fp32"}
    fp32 = OnnxRanker(tmp_path / "fp32", device="cpu").score(QUERY, DOCS)
    int8 = OnnxRanker(tmp_path / "head", device="cpu", exact_head=0).score(QUERY, DOCS)
    cascade = OnnxRanker(tmp_path / "head", device="cpu").score(QUERY, DOCS)
    assert not np.array_equal(np.argsort(-int8)[:4], np.argsort(-fp32)[:4])  # int8 alone reorders the head
    head = np.argsort(-int8, kind="stable")[:4]
    np.testing.assert_allclose(cascade[head], fp32[head], atol=1e-5)  # the head carries fp32 scores
    order = np.argsort(-cascade, kind="stable")
    assert set(order[:4]) == set(head)
    assert order[:4].tolist() == head[np.argsort(-fp32[head], kind="stable")].tolist()
    tail = order[4:]
    assert tail.tolist() == [i for i in np.argsort(-int8, kind="stable") if i not in set(head)]
    rr = Reranker.load(tmp_path / "head", device="cpu")  # the embedded API picks the head up from serving.json
    assert [h.score for h in rr.rerank(QUERY, DOCS, top_k=4)] == pytest.approx(sorted(cascade, reverse=True)[:4])


def test_exact_head_argument_errors_and_stale_head_removal(outlier_ce_dir, tmp_path):
    with pytest.raises(ValueError, match="exact_head=2 needs quantize or fp16"):
        export_model(outlier_ce_dir, tmp_path / "x", exact_head=2)
    with pytest.raises(ModelDirError, match="scores no \\(query, doc\\) pairs"):
        export_model(tiny_sasrec_dir(tmp_path / "sasrec"), tmp_path / "tower", quantize="int8", exact_head=2)
    export_model(outlier_ce_dir, tmp_path / "out", quantize="int8", exact_head=2)
    assert (tmp_path / "out" / HEAD_FILE).is_file()
    export_model(outlier_ce_dir, tmp_path / "out", quantize="int8")  # re-export without a head
    assert not (tmp_path / "out" / HEAD_FILE).exists()
    with pytest.raises(ValueError, match="exact_head=3 needs an export with an fp32 head graph"):
        OnnxRanker(tmp_path / "out", device="cpu", exact_head=3)
    from rankwise.cli import app

    bad = CliRunner().invoke(app, ["export", "--model-dir", str(outlier_ce_dir), "--output", str(tmp_path / "y"),
                                   "--exact-head", "4"])
    assert bad.exit_code == 1 and "--exact-head needs --quantize or --fp16" in bad.output
    ok = CliRunner().invoke(app, ["export", "--model-dir", str(outlier_ce_dir), "--output", str(tmp_path / "z"),
                                  "--quantize", "int8", "--exact-head", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    line = ok.output[ok.output.index('{"output"'):].splitlines()[0]  # after the weight-loading progress bar
    assert json.loads(line)["exact_head"] == 2 and (tmp_path / "z" / HEAD_FILE).is_file()
