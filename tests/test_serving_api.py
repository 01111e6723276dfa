"""The embedded library: Reranker / Recommender loading, errors, thread safety, ERank parity."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rankwise.core.model_dir import ModelDirError, write_rankwise_json
from rankwise.serving.api import Recommender, Reranker
from rankwise.serving.export import export_model
from tests._serving_models import tiny_cross_encoder_dir, tiny_sasrec_dir

QUERIES = ["what is bm25", "vitamin d and bone density", "do cross-encoders rank well", "smoking and lung cancer"]
DOCS = [
    "BM25 is a ranking function used by search engines.",
    "Low vitamin D is associated with reduced bone mineral density.",
    "A fish swims in the sea.",
    "Cigarette smoking increases the risk of lung cancer.",
    "Cross-encoders read the query and the document together. " * 3,
    "short",
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("api")
    ce = tiny_cross_encoder_dir(base / "ce", max_length=24)
    export_model(ce, base / "ce-onnx", runtime="onnxruntime")
    sas = tiny_sasrec_dir(base / "sasrec")
    export_model(sas, base / "sasrec-onnx")
    return {"ce": ce, "ce-onnx": base / "ce-onnx", "sasrec": sas, "sasrec-onnx": base / "sasrec-onnx"}


@pytest.mark.parametrize("backend", ["ce", "ce-onnx"])
def test_reranker_is_thread_safe_and_matches_sequential_results(dirs, backend):
    rr = Reranker.load(dirs[backend], device="cpu", threads=1, batch_size=4)
    requests = [(QUERIES[i % 4], DOCS[i % 3 :] + DOCS[: i % 3]) for i in range(48)]
    sequential = [rr.rerank(q, d, top_k=4) for q, d in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda r: rr.rerank(*r, top_k=4), requests))
    assert concurrent == sequential  # Hit is a frozen dataclass: docid, score and rank all equal
    assert all(len(h) == 4 and [x.rank for x in h] == [1, 2, 3, 4] for h in sequential)


def test_reranker_onnx_and_pytorch_dirs_agree(dirs):
    a = Reranker.load(dirs["ce"], device="cpu").score(QUERIES[1], DOCS)
    b = Reranker.load(dirs["ce-onnx"], device="cpu").score(QUERIES[1], DOCS)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_reranker_truncates_over_long_inputs_with_one_warning(dirs, caplog):
    rr = Reranker.load(dirs["ce-onnx"], device="cpu")
    with caplog.at_level(logging.WARNING, logger="rankwise.serving"):
        long_doc = "bone density " * 500
        first = rr.score("vitamin d", [long_doc, "short"])
        rr.score("vitamin d", [long_doc])
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["rankwise: 1 of 2 pairs reached max_length=24 and were truncated (reported once per model)"]
    assert np.isfinite(first).all()


def test_reranker_clear_errors(dirs, tmp_path):
    rr = Reranker.load(dirs["ce-onnx"], device="cpu")
    with pytest.raises(ValueError, match="query is empty"):
        rr.rerank("  ", ["a"])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        rr.rerank("q", ["a"], top_k=0)
    with pytest.raises(TypeError, match=r"docs\[1\] is int"):
        rr.score("q", ["a", 3])
    assert rr.rerank("q", []) == []
    with pytest.raises(ModelDirError, match="does not exist"):
        Reranker.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="neither serving.json"):
        Reranker.load(tmp_path / "empty")
    with pytest.raises(ModelDirError, match="is a recommender"):
        Reranker.load(dirs["sasrec"])
    with pytest.raises(ModelDirError, match="is not a reranker"):
        Reranker.load(dirs["sasrec-onnx"])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in dirs["ce-onnx"].iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        Reranker.load(corrupt)
    (corrupt / "serving.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="serving.json: not valid JSON"):
        Reranker.load(corrupt)
    write_rankwise_json(tmp_path / "odd", "no-such-kind")
    with pytest.raises(ModelDirError, match="not a known reranker"):
        Reranker.load(tmp_path / "odd")


def test_recommender_onnx_and_pytorch_agree_and_exclude_history(dirs):
    history = ["i3", "i7", "i7", "i12", "i5"]
    a = Recommender.load(dirs["sasrec"], device="cpu").recommend(history, k=10)
    b = Recommender.load(dirs["sasrec-onnx"], device="cpu").recommend(history, k=10)
    assert [h.item_id for h in a] == [h.item_id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert len(a) == 10 and not {h.item_id for h in a} & set(history)
    assert [h.score for h in a] == sorted((h.score for h in a), reverse=True)
    with_seen = Recommender.load(dirs["sasrec-onnx"]).recommend(history, k=40, exclude_seen=False)
    assert {h.item_id for h in with_seen} == {f"i{k}" for k in range(1, 41)}  # the whole catalogue


def test_recommender_is_thread_safe(dirs):
    rec = Recommender.load(dirs["sasrec"], device="cpu")
    histories = [[f"i{(u * 7 + j) % 40 + 1}" for j in range(1 + u % 15)] for u in range(40)]
    sequential = [rec.recommend(h, k=5) for h in histories]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda h: rec.recommend(h, k=5), histories)) == sequential


def test_recommender_inputs_are_checked(dirs, caplog):
    rec = Recommender.load(dirs["sasrec-onnx"])
    with pytest.raises(ValueError, match="no item known"):
        rec.recommend(["nope"])
    with pytest.raises(ValueError, match="non-empty list"):
        rec.recommend([])
    with pytest.raises(ValueError, match="k must be >= 1"):
        rec.recommend(["i1"], k=0)
    with caplog.at_level(logging.WARNING, logger="rankwise.serving"):
        long = rec.recommend(["new-item"] + [f"i{k % 40 + 1}" for k in range(30)], k=3)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown to the model" in messages and "cut to the last 20" in messages and len(long) == 3
    with pytest.raises(ModelDirError, match="is a reranker"):
        Recommender.load(dirs["ce"])


@pytest.mark.parametrize("readout", ["integer", "yes_no"])
def test_erank_export_matches_pytorch_ranker(tmp_path, readout):
    from rankwise.rankers.erank import ERankRanker
    from rankwise.rankers.llm import tiny_causal_lm

    model, tok = tiny_causal_lm(QUERIES + DOCS + ["0 1 2 3 4 5 6 7 8 9 10 yes no Yes No"] * 5, hidden=16)
    ERankRanker(model, tok, readout=readout, max_doc_tokens=12).save_pretrained(tmp_path / "erank")
    result = export_model(tmp_path / "erank", tmp_path / "onnx", runtime="onnxruntime")
    assert result.fp32_parity_max_abs_diff <= 1e-3
    meta = json.loads((tmp_path / "onnx" / "serving.json").read_text())
    assert meta["shared_prefix"] and meta["inputs"] == ["prefix_ids", "input_ids", "attention_mask"]
    export_model(tmp_path / "erank", tmp_path / "whole", runtime="onnxruntime", share_prefix=False)
    assert json.loads((tmp_path / "whole" / "serving.json").read_text())["inputs"] == ["input_ids", "attention_mask"]
    pytorch = Reranker.load(tmp_path / "erank", device="cpu")
    shared = Reranker.load(tmp_path / "onnx", device="cpu", batch_size=2)  # 3 batches, one prefix
    whole = Reranker.load(tmp_path / "whole", device="cpu", batch_size=2)
    for query, docs in [(QUERIES[0], DOCS), (QUERIES[1], DOCS[2:]), (QUERIES[2], DOCS[:1]), (QUERIES[3], [DOCS[0]] * 3)]:
        torch_scores = pytorch.score(query, docs)
        onnx_scores = shared.score(query, docs)
        np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
        np.testing.assert_allclose(whole.score(query, docs), torch_scores, atol=1e-4)
    lo, hi = (0.0, 10.0) if readout == "integer" else (0.0, 1.0)
    assert ((onnx_scores >= lo) & (onnx_scores <= hi)).all()


def test_shared_prefix_length_leaves_each_row_a_token():
    from rankwise.serving.runtime import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last id stays a row's own
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 2 and shared_prefix_length([]) == 0
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]], own=2) == 1  # the integer readout reads two positions


def test_bi_encoder_export_matches_pytorch_ranker(tmp_path):
    from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder
    from tests._serving_models import tiny_bi_encoder_dir

    src = tiny_bi_encoder_dir(tmp_path / "bi")
    result = export_model(src, tmp_path / "onnx")
    assert result.fp32_parity_max_abs_diff <= 1e-3
    want = TrainableBiEncoder.from_pretrained(src, cache=False).score(QUERIES[1], DOCS)
    got = Reranker.load(tmp_path / "onnx", device="cpu", batch_size=2).score(QUERIES[1], DOCS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(np.unique(np.round(got, 4))) > 1  # scores differ between documents


@pytest.mark.parametrize("kind", ["hstu", "rearec-erl", "rearec-prl", "hllm", "hcn", "hcn-max"])
def test_every_recommender_kind_exports_and_serves_like_pytorch(tmp_path, kind):
    from tests._serving_models import tiny_recommender_dir

    src = tiny_recommender_dir(tmp_path / kind, kind)
    result = export_model(src, tmp_path / "onnx")
    assert result.fp32_parity_max_abs_diff <= 1e-3
    history = ["i2", "i9", "i4", "i30", "i17", "i9"]
    a = Recommender.load(src, device="cpu").recommend(history, k=8)
    b = Recommender.load(tmp_path / "onnx", device="cpu").recommend(history, k=8)
    assert [h.item_id for h in a] == [h.item_id for h in b] and len(a) == 8
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
    assert not {h.item_id for h in a} & set(history)


def test_erank_shared_prefix_export_refuses_a_cache_the_model_ignores(tmp_path, monkeypatch):
    """If a transformers version dropped the prefix keys/values, the split would change the scores:
    the builder compares it with whole prompts before tracing and refuses, naming the fallback."""
    import transformers

    from rankwise.core.model_dir import ModelDirError
    from rankwise.testing import tiny_erank_dir

    erank = tiny_erank_dir(tmp_path / "erank", QUERIES + DOCS)
    monkeypatch.setattr(transformers, "DynamicCache", lambda *a, **k: None)  # the remainders run without the prefix
    with pytest.raises(ModelDirError, match="share_prefix=False"):
        export_model(erank, tmp_path / "onnx", runtime="onnxruntime")
    export_model(erank, tmp_path / "whole", runtime="onnxruntime", share_prefix=False)  # the fallback exports
