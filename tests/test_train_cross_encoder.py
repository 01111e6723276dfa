"""Training path on tiny random models: loss finite, weights change, checkpoints reload and resume."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel
from typer.testing import CliRunner

from rankwise.eval.datasets.beir import load_beir
from rankwise.rankers import load_ranker
from rankwise.rankers.bi_encoder import default_encoder_path
from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig, load_trainable
from rankwise.train.data import TrainingList

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _tiny_dir(tmp: Path, head: bool) -> Path:
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, num_labels=1, **TINY)
    model = BertForSequenceClassification(config) if head else BertModel(config)
    out = tmp / ("tiny-ce" if head else "tiny-bi")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lists(data_dir):
    """Hand-made lists from real SciFact train data: positives + random negatives, no BM25."""
    ds = load_beir(data_dir / "beir" / "scifact", "train", download=False)
    rng = random.Random(0)
    docids = sorted(ds.corpus)
    out = []
    for qid in sorted(ds.qrels)[:12]:
        pos = sorted(ds.qrels[qid])[:1]
        neg = rng.sample(docids, 3)
        ids = pos + [d for d in neg if d not in pos]
        out.append(TrainingList(qid, ds.queries[qid], tuple(ids), tuple(ds.doc_text(d)[:300] for d in ids),
                                tuple(1.0 if d in pos else 0.0 for d in ids), tuple(range(len(ids), 0, -1)),
                                tuple(float(i) for i in range(len(ids)))))
    return out


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("objective", "curriculum"), [("lipo", "bm25-rr"), ("ranklist", "bm25-pair"), ("pointwise", None)])
def test_cross_encoder_trains_and_reloads(tmp_path, lists, objective, curriculum):
    ce = CrossEncoder.from_pretrained(_tiny_dir(tmp_path, head=True), max_length=48)
    before = _params(ce.model)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective=objective, curriculum=curriculum, max_steps=3,
                                    lists_per_step=4, learning_rate=1e-3, progress=False, log_every=1)
    summary = CrossEncoderTrainer(ce, lists, cfg).train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"]) and summary["steps"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(ce.model)))
    meta = json.loads((tmp_path / "out" / "rankwise.json").read_text())
    assert meta["kind"] == "cross-encoder" and meta["training"]["objective"] == objective
    reloaded = load_ranker(tmp_path / "out")
    q, docs = lists[0].query, list(lists[0].docs)
    assert torch.allclose(torch.tensor(reloaded.score(q, docs)), torch.tensor(ce.score(q, docs)), atol=1e-5)


def test_bf16_autocast_trains_with_fp32_weights_and_fp32_scores(tmp_path, lists):
    ce = CrossEncoder.from_pretrained(_tiny_dir(tmp_path, head=True), max_length=48)
    before = _params(ce.model)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective="listnet", max_steps=2, lists_per_step=4,
                                    learning_rate=1e-3, bf16=True, progress=False, log_every=1)
    trainer = CrossEncoderTrainer(ce, lists, cfg)
    from rankwise.train.data import collate_lists

    scores = trainer.list_scores(collate_lists(lists[:4]))
    assert scores.dtype == torch.float32 and scores.shape == (4, 4)
    summary = trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"])
    assert all(p.dtype == torch.float32 for p in ce.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(ce.model)))


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, lists):
    start = _tiny_dir(tmp_path, head=True)

    def cfg(name):
        return CrossEncoderTrainerConfig(str(tmp_path / name), objective="listnet", max_steps=4, lists_per_step=2,
                                         learning_rate=1e-3, save_steps=2, progress=False)

    full = CrossEncoder.from_pretrained(start, max_length=48)
    CrossEncoderTrainer(full, lists, cfg("a")).train()
    ckpt = CrossEncoderTrainer.latest_checkpoint(tmp_path / "a")
    assert ckpt is not None and ckpt.name == "checkpoint-2"
    resumed = load_trainable("cross-encoder", ckpt, 48)
    trainer = CrossEncoderTrainer(resumed, lists, cfg("b"))
    trainer.resume(ckpt)
    assert trainer.step == 2
    trainer.train()
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_bi_encoder_trains_query_tower_only_and_reloads(tmp_path, lists, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder

    bi = TrainableBiEncoder.from_pretrained(_tiny_dir(tmp_path, head=False), max_length=48)
    docs_before = bi.doc_encoder.encode_documents(list(lists[0].docs)).copy()
    before = _params(bi.model)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "bi"), objective="lambdaloss", max_steps=3, lists_per_step=4,
                                    learning_rate=1e-3, progress=False)
    CrossEncoderTrainer(bi, lists, cfg).train()
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(bi.model)))
    assert (bi.doc_encoder.encode_documents(list(lists[0].docs)) == docs_before).all()
    reloaded = load_ranker(tmp_path / "bi")
    assert isinstance(reloaded, TrainableBiEncoder) and reloaded.scale == pytest.approx(bi.scale)
    q, docs = lists[1].query, list(lists[1].docs)
    assert torch.allclose(torch.tensor(reloaded.score(q, docs)), torch.tensor(bi.score(q, docs)), atol=1e-4)


def test_bi_encoder_adapter_starts_as_plain_cosine_trains_and_reloads(tmp_path, lists, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder

    start = _tiny_dir(tmp_path, head=False)
    plain = TrainableBiEncoder.from_pretrained(start, max_length=48)
    bi = load_trainable("bi-encoder-adapter", start, 48)
    q, docs = lists[2].query, list(lists[2].docs)
    assert torch.allclose(torch.tensor(bi.score(q, docs)), torch.tensor(plain.score(q, docs)), atol=1e-5)
    encoder_before = _params(bi.model.encoder)
    adapter_before = bi.model.adapter.weight.detach().clone()
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "ad"), objective="lipo", curriculum="bm25-score", max_steps=3,
                                    lists_per_step=4, learning_rate=1e-2, progress=False)
    CrossEncoderTrainer(bi, lists, cfg).train()
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, _params(bi.model.encoder)))
    assert not torch.equal(adapter_before, bi.model.adapter.weight)
    reloaded = load_ranker(tmp_path / "ad")
    assert reloaded.model.adapter is not None
    assert torch.allclose(torch.tensor(reloaded.score(q, docs)), torch.tensor(bi.score(q, docs)), atol=1e-4)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="objective"):
        CrossEncoderTrainerConfig("x", objective="nope")
    with pytest.raises(ValueError, match="bm25-pair"):
        CrossEncoderTrainerConfig("x", objective="listnet", curriculum="bm25-pair")


def test_cli_trains_a_tiny_model_with_bm25_negatives(tmp_path, data_dir):
    from rankwise.cli import app

    model = _tiny_dir(tmp_path, head=True)
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(app, [
        "train", "cross-encoder", "--dataset", str(data_dir / "beir" / "scifact"), "--objective", "lipo",
        "--curriculum", "bm25-rr", "--model", str(model), "--max-steps", "2", "--lists-per-step", "2",
        "--list-size", "4", "--max-length", "32", "--output", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "rankwise.json").read_text())["training"]["curriculum"] == "bm25-rr"


def test_cli_bad_dataset_is_one_line_error(tmp_path):
    from rankwise.cli import app

    result = CliRunner().invoke(app, ["train", "cross-encoder", "--dataset", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "--dataset" in result.output and "Traceback" not in result.output
