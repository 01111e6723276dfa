"""benchmarks/serving_llm.py end to end on a tiny random causal LM: every engine builds, is timed and is
compared with the PyTorch fp32 reference on real SciFact queries."""

from __future__ import annotations

import pytest

from tests._bench import bench_module

@pytest.fixture(scope="module")
def bench():
    with bench_module("serving_llm") as module:
        yield module

def test_every_engine_is_built_timed_and_compared_with_pytorch_fp32(bench, data_dir, tmp_path):
    from rankwise.rankers.llm import tiny_causal_lm

    model, tok = tiny_causal_lm(["vitamin d bone density smoking cancer 0 1 2 3 4 5 6 7 8 9 10"] * 5, hidden=16)
    backbone = tmp_path / "tiny-lm"
    model.save_pretrained(backbone)
    tok.save_pretrained(backbone)
    cfg = bench.BenchConfig(backbone=str(backbone), n_queries=2, depth=3, max_doc_tokens=16, batch_size=2, threads=1)
    rows, extra = bench.run(cfg, tmp_path / "work")
    by = {r["engine"]: r for r in rows}
    assert set(by) == {"bm25", "pytorch-fp32", "pytorch-bf16", *bench.EXPORTS}
    assert not [r for r in rows if "skipped" in r], [r.get("skipped") for r in rows]
    for name in ("pytorch-fp32", "pytorch-bf16", *bench.EXPORTS):
        r = by[name]
        assert r["queries"] == 2 and r["docs_per_s"] > 0 and 0 <= r["ndcg@10"] <= 1
    assert by["pytorch-fp32"]["max_abs_diff_vs_fp32"] == 0 and by["pytorch-fp32"]["speedup_vs_pytorch_fp32"] == 1
    assert by["onnx-fp32"]["max_abs_diff_vs_fp32"] < 1e-3  # the same scorer, its prompt prefix shared
    assert by["onnx-fp32-per-document"]["max_abs_diff_vs_fp32"] < 1e-3
    assert by["pytorch-fp32"]["model"].startswith("erank-zero-shot")  # a bare causal LM; a trained ERank dir says erank-sft
    assert 0 < extra["mean_digit_mass"] <= 1
