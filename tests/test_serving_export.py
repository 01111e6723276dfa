"""ONNX export: parity with PyTorch for each exportable kind, int8, metadata, loud failures."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.core.model_dir import ModelDirError, write_rankwise_json
from rankwise.serving import export as export_mod
from rankwise.serving.export import PARITY_PAIRS, ExportGraph, ExportParityError, export_model
from rankwise.serving.onnx_ranker import OnnxRanker
from rankwise.serving.runtime import OnnxSession, bucket_batches
from tests._serving_models import tiny_cross_encoder_dir, tiny_sasrec_dir


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    return tiny_cross_encoder_dir(tmp_path_factory.mktemp("ce") / "model")


@pytest.fixture(scope="module")
def ce_onnx(ce_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ce") / "onnx"
    export_model(ce_dir, out, runtime="onnxruntime")
    return out


def test_export_cross_encoder_matches_pytorch_on_real_pairs(ce_dir, ce_onnx):
    meta = json.loads((ce_onnx / "serving.json").read_text())
    assert meta["kind"] == "cross-encoder" and meta["precision"] == "fp32"
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["fp32_parity_max_abs_diff"] <= 1e-3 and meta["parity_inputs"] == len(PARITY_PAIRS)
    assert (ce_onnx / "tokenizer.json").is_file() and (ce_onnx / "model.onnx").is_file()
    # Scored one pair at a time and in buckets, ONNX matches the PyTorch ranker on unseen pairs.
    ce = CrossEncoder.from_pretrained(ce_dir)
    onnx_ranker = OnnxRanker(ce_onnx, device="cpu", batch_size=2)
    query, docs = "vitamin d and bones", [d for _, d in PARITY_PAIRS] + ["short", "bone density " * 40]
    np.testing.assert_allclose(onnx_ranker.score(query, docs), ce.score(query, docs), atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "int8-blockwise", "fp16"])
def test_export_int8_and_fp16_record_their_distance_and_shrink_the_file(ce_dir, ce_onnx, tmp_path, precision):
    out = tmp_path / precision
    result = export_model(ce_dir, out, quantize=None if precision == "fp16" else precision, fp16=precision == "fp16")
    meta = json.loads((out / "serving.json").read_text())
    assert result.precision == meta["precision"] == precision
    assert meta["parity_max_abs_diff"] == pytest.approx(result.parity_max_abs_diff)
    assert 0 < result.parity_max_abs_diff < 0.05  # really measured (not bit-identical), still close
    ops = Counter(n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node)
    if precision == "int8":  # fused QKV projections and the other weight MatMuls run on int8; embeddings stay fp32
        assert ops["QAttention"] == 2 and ops["MatMulInteger"] == 2 * 3 and ops["EmbedLayerNormalization"] == 1
        assert "QEmbedLayerNormalization" not in ops and ops["MatMul"] == 2  # pooler and one-logit head
    elif precision == "int8-blockwise":  # attention output and FFN MatMuls; the fused QKV projection stays fp32
        assert ops["MatMulNBits"] == 2 * 3 and ops["Attention"] == 2 and "DynamicQuantizeLinear" not in ops
    else:
        assert (out / "model.onnx").stat().st_size < 0.6 * (ce_onnx / "model.onnx").stat().st_size
    scores = OnnxRanker(out, device="cpu").score("what is bm25", [d for _, d in PARITY_PAIRS])
    assert np.isfinite(scores).all() and scores.shape == (len(PARITY_PAIRS),)


def test_blockwise_int8_is_closer_to_fp32_than_per_tensor_int8(tmp_path):
    """Per-block activation scales beat one scale per tensor on a model with spread-out scores, at
    8-bit weights on a VNNI CPU. Without VNNI, full-range int8 weights saturate onnxruntime's int16
    pair sums (many times the 7-bit export's error), so the default export there has 7-bit weights,
    which on this model are as close as blockwise."""
    from rankwise.core.device import cpu_has_vnni

    src = tiny_cross_encoder_dir(tmp_path / "model", initializer_range=0.2)
    docs = [d for _, d in PARITY_PAIRS] + [f"bone density and vitamin d trial {i} " * (i + 1) for i in range(12)]
    ref = CrossEncoder.from_pretrained(src).score("vitamin d and bones", docs)
    error = {}
    for name, options in {"int8": {"quantize": "int8"}, "int8-blockwise": {"quantize": "int8-blockwise"},
                          "int8-full": {"quantize": "int8", "int8_reduce_range": False}}.items():
        export_model(src, tmp_path / name, **options)
        scores = OnnxRanker(tmp_path / name, device="cpu").score("vitamin d and bones", docs)
        error[name] = float(np.abs(scores - ref).mean())
    if cpu_has_vnni():
        assert 0 < error["int8-blockwise"] < error["int8"] == error["int8-full"]
    else:
        assert 0 < error["int8-blockwise"] < 1.1 * error["int8"] and error["int8-full"] > 3 * error["int8"], error


def test_export_cli_int8_weights_sets_the_recorded_weight_range_and_the_int8_initialisers(ce_dir, tmp_path):
    from onnx import numpy_helper
    from typer.testing import CliRunner

    from rankwise.cli import app

    runner = CliRunner()
    for bits, levels in (("7bit", 64), ("8bit", 127)):
        out = tmp_path / bits
        res = runner.invoke(app, ["export", "--model-dir", str(ce_dir), "--output", str(out), "--quantize", "int8",
                                  "--int8-weights", bits, "--runtime", "onnxruntime"])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "serving.json").read_text())["int8_weight_range"] == [-levels, levels]
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(out / "model.onnx")).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 2]
        assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == levels
    bad = runner.invoke(app, ["export", "--model-dir", str(ce_dir), "--output", str(tmp_path / "bad"), "--quantize", "int8",
                              "--int8-weights", "6bit"])
    assert bad.exit_code == 1 and "--int8-weights 6bit" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_export_fuses_bert_attention_and_can_skip_it(ce_dir, ce_onnx, tmp_path):
    meta = json.loads((ce_onnx / "serving.json").read_text())
    assert meta["fused_ops"]["Attention"] == 2 and meta["fused_ops"]["SkipLayerNormalization"] == 4
    fused_ops = Counter(n.op_type for n in onnx.load(str(ce_onnx / "model.onnx")).graph.node)
    assert fused_ops["Attention"] == 2 and "Softmax" not in fused_ops  # softmax lives inside the fused op
    export_model(ce_dir, tmp_path / "plain", fuse=False, runtime="onnxruntime")
    assert json.loads((tmp_path / "plain" / "serving.json").read_text())["fused_ops"] is None
    plain_ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "plain" / "model.onnx")).graph.node)
    assert "Attention" not in plain_ops and plain_ops["Softmax"] == 2
    # Right-padded batches of mixed lengths: the fused graph's per-row lengths equal the plain mask.
    docs = [d for _, d in PARITY_PAIRS] + ["x", "bone density " * 40]
    np.testing.assert_allclose(OnnxRanker(ce_onnx, device="cpu", batch_size=8).score("vitamin d", docs),
                               OnnxRanker(tmp_path / "plain", device="cpu", batch_size=8).score("vitamin d", docs), atol=1e-5)


def test_export_keeps_the_plain_graph_when_the_fused_one_disagrees(ce_dir, tmp_path, monkeypatch, caplog):
    other = tiny_cross_encoder_dir(tmp_path / "other")
    export_model(other, tmp_path / "other-onnx", fuse=False)
    model = CrossEncoder.from_pretrained(other)  # same graph with the head negated: a wrong "fusion"
    with torch.no_grad():
        model.model.classifier.weight.mul_(-1)
    model.save_pretrained(tmp_path / "flipped")
    export_model(tmp_path / "flipped", tmp_path / "flipped-onnx", fuse=False)
    monkeypatch.setattr(export_mod, "_fuse_encoder", lambda *_: (tmp_path / "flipped-onnx" / "model.onnx", {"Attention": 2}))
    with caplog.at_level(logging.WARNING, logger="rankwise.serving"):
        export_model(other, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "serving.json").read_text())["fused_ops"] is None
    assert any("exporting the plain graph" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(OnnxRanker(tmp_path / "out", device="cpu").score("q", ["a", "b c"]),
                               OnnxRanker(tmp_path / "other-onnx", device="cpu").score("q", ["a", "b c"]), atol=1e-6)


def test_export_fails_loudly_when_the_graph_disagrees(ce_dir, tmp_path, monkeypatch):
    class ShapeBranch(torch.nn.Module):
        def forward(self, input_ids, attention_mask):  # traced with batch 2: the branch is frozen
            bonus = 1.0 if input_ids.shape[0] > 2 else 0.0
            return input_ids.float().mean(1) * 0 + bonus

    def broken(model_dir, meta, pairs):
        ids = torch.ones(2, 4, dtype=torch.long)
        big = torch.ones(5, 6, dtype=torch.long)
        return ExportGraph(ShapeBranch(), {"input_ids": ids, "attention_mask": ids}, {"input_ids": big, "attention_mask": big},
                           "scores", {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})

    monkeypatch.setitem(export_mod.EXPORTERS, "cross-encoder", broken)
    with pytest.raises(ExportParityError, match=r"\|ONNX - PyTorch\| = 1 > 0.001"):
        export_model(ce_dir, tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.onnx").exists()


def test_export_rejects_unknown_kind_and_missing_dir(tmp_path):
    write_rankwise_json(tmp_path / "m", "no-such-kind")
    with pytest.raises(ModelDirError, match="has no exportable model"):
        export_model(tmp_path / "m", tmp_path / "out")
    with pytest.raises(ModelDirError, match="does not exist"):
        export_model(tmp_path / "absent", tmp_path / "out")


def test_export_user_tower_matches_pytorch_and_caches_item_vectors(tmp_path):
    from rankwise.recsys.sasrec import SASRec

    src = tiny_sasrec_dir(tmp_path / "sasrec")
    export_model(src, tmp_path / "onnx")
    meta = json.loads((tmp_path / "onnx" / "serving.json").read_text())
    assert meta["task"] == "user-tower" and meta["item_ids"][:2] == ["i1", "i2"]
    model = SASRec.from_pretrained(src)
    vectors = np.load(tmp_path / "onnx" / "item_vectors.npy")
    np.testing.assert_allclose(vectors, model.item_embeddings()[1:].detach().numpy(), atol=0)
    seq = np.array([[0, 0, 0, 3, 9, 4, 1], [5, 6, 7, 8, 9, 10, 11]], dtype=np.int64)  # unseen length 7
    got = OnnxSession(tmp_path / "onnx" / "model.onnx", device="cpu").run({"item_seq": seq})
    with torch.inference_mode():
        want = model.encode_users(torch.from_numpy(seq)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_runtime_falls_back_to_cpu_with_one_notice(ce_onnx, caplog, monkeypatch):
    import onnxruntime as ort

    from rankwise.serving import runtime

    monkeypatch.setattr(runtime, "_noticed", set())
    # Pretend the build has CUDA: onnxruntime cannot initialise it here, the session must land on CPU.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="rankwise.serving"):
        a = OnnxSession(ce_onnx / "model.onnx", device="cuda")
        b = OnnxSession(ce_onnx / "model.onnx", device="auto", intra_op_threads=1)
    assert a.device == b.device == "cpu" and a.providers == ["CPUExecutionProvider"]
    notices = [r.getMessage() for r in caplog.records if "CUDAExecutionProvider" in r.getMessage()]
    assert notices == ["rankwise: CUDAExecutionProvider could not be initialised; running on CPU"]
    with caplog.at_level(logging.WARNING, logger="rankwise.serving"):
        caplog.clear()
        OnnxSession(ce_onnx / "model.onnx", device="cpu")
    assert not caplog.records


def test_runtime_rejects_corrupt_model(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        OnnxSession(tmp_path / "model.onnx")


def test_bucket_batches_cover_every_item_once_and_respect_limits():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=57).tolist()
    batches = bucket_batches(lengths, max_batch=8, max_tokens=300)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(57))
    for b in batches:
        assert len(b) <= 8 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 300)
    assert [lengths[i] for i in flat] == sorted(lengths)  # buckets are length-sorted


def test_io_binding_path_gives_the_plain_run_result(ce_onnx):
    # The CUDA path binds inputs/outputs; the same code bound to the CPU must match session.run.
    sess = OnnxSession(ce_onnx / "model.onnx", device="cpu")
    enc = OnnxRanker(ce_onnx, device="cpu")._encode("vitamin d", [d for _, d in PARITY_PAIRS])[0]
    from rankwise.serving.runtime import pad_batch

    feeds = pad_batch(enc, 0, list(enc[0]))
    np.testing.assert_array_equal(sess._run_io_binding(feeds, "cpu"), sess.run(feeds))


def test_export_large_graphs_use_one_external_data_file(ce_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "EXTERNAL_DATA_BYTES", 0)  # pretend the graph is over 2 GB
    export_model(ce_dir, tmp_path / "big", runtime="onnxruntime")
    assert sorted(p.name for p in (tmp_path / "big").glob("model.onnx*")) == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "big" / "model.onnx").stat().st_size < 100_000  # weights live in the .data file
    got = OnnxRanker(tmp_path / "big", device="cpu").score("vitamin d", [d for _, d in PARITY_PAIRS])
    want = CrossEncoder.from_pretrained(ce_dir).score("vitamin d", [d for _, d in PARITY_PAIRS])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_export_hllm_item_tower_reproduces_the_cached_item_vectors(tmp_path, monkeypatch):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankwise import recsys
    from rankwise.rankers.bi_encoder import default_encoder_path

    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))  # HLLM caches item vectors there
    torch.manual_seed(0)
    llm_dir = tmp_path / "item-llm"
    tok = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(str(llm_dir))
    tok.save_pretrained(str(llm_dir))
    texts = ["title: Toy Story genres: Animation", "title: Heat", "title: Casino genres: Crime Drama " * 4,
             "title: Fargo", "title: Alien genres: Horror Sci-Fi", "title: Brazil"]
    model = recsys.HLLM(recsys.HLLMConfig(n_items=len(texts), item_llm=str(llm_dir), hidden=8, max_len=10), item_texts=texts)
    model.item_ids = [f"m{k}" for k in range(1, len(texts) + 1)]
    model.save_pretrained(tmp_path / "hllm")

    result = export_model(tmp_path / "hllm", tmp_path / "items", part="item-tower")
    assert result.fp32_parity_max_abs_diff <= 1e-3
    meta = json.loads((tmp_path / "items" / "serving.json").read_text())
    assert meta["task"] == "item-tower" and meta["part"] == "item-tower"
    enc = AutoTokenizer.from_pretrained(str(tmp_path / "items"))(texts, padding=True, truncation=True, max_length=meta["max_length"], return_tensors="np")
    got = OnnxSession(tmp_path / "items" / "model.onnx", device="cpu").run({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    with torch.inference_mode():
        want = recsys.HLLM.from_pretrained(tmp_path / "hllm").item_embeddings()[1:].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)  # the ONNX item tower rebuilds the catalogue's vectors
    with pytest.raises(ModelDirError, match="has no exportable item-tower"):
        export_model(tiny_sasrec_dir(tmp_path / "sas"), tmp_path / "x", part="item-tower")
