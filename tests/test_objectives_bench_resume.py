"""``objectives_scifact_cross_encoder.py train --checkpoints``: a job killed mid-run or while scoring
continues where it stopped and ends with the scores of an uninterrupted job (tiny random model,
hand-made bundle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from rankwise.eval.bundle import write_bundle
from rankwise.rankers.bi_encoder import default_encoder_path
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer

from tests._bench import bench_module

WORDS = "protein cell gene virus tumour insulin neuron enzyme receptor membrane".split()


def _bundle(root, test_qrels=None):
    """6 fit, 3 dev and 3 test queries over 20 documents; every train query's first candidate is its positive."""
    docs = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} study {i}" for i in range(20)}
    queries, bm25, qrels = {}, {}, {}
    for split, n, offset in (("fit", 6, 0), ("dev", 3, 6), ("test", 3, 9)):
        queries[split] = {f"q{offset + k}": f"what about {WORDS[(offset + k) % 10]}" for k in range(n)}
        bm25[split] = {q: [[f"d{(j + k + offset) % 20}", 10.0 - j, j + 1] for j in range(6)] for k, q in enumerate(queries[split])}
    for split in ("fit", "dev"):
        for q, hits in bm25[split].items():
            qrels[q] = {hits[0][0]: 1}
    write_bundle(root / "scifact_lists.json.gz", {"queries": queries, "bm25": bm25, "top_k": 6, "seed": 0, "docs": docs,
                                                  "qrels": {"train": qrels, "test": test_qrels or {}}})
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, num_labels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(root / "start-model")
    tok.save_pretrained(root / "start-model")
    return root


@pytest.fixture(scope="module")
def bench():
    with bench_module("objectives_scifact_cross_encoder") as module:
        yield module


def _config(bench):
    return bench.TrainConfig(steps=4, lists_per_step=2, list_size=4, learning_rate=1e-3, max_length=32, bf16=False, score_batch=8,
                             runs=["listnet"], eval_steps=2, patience=5, dev_eval_queries=3, dev_eval_top_k=6)


def test_killed_mid_run_and_while_scoring_resumes_to_the_uninterrupted_scores(tmp_path, bench, monkeypatch):
    bundle = _bundle(tmp_path / "bundle")
    whole = bench.train_all(bundle, tmp_path / "whole", _config(bench), "cpu")
    expected = np.load(tmp_path / "whole" / "scores.npz")

    out, ckpts = tmp_path / "out", tmp_path / "ckpts"
    original = CrossEncoderTrainer.compute_loss

    def killed_at_step_3(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(CrossEncoderTrainer, "compute_loss", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        bench.train_all(bundle, out, _config(bench), "cpu", checkpoints=ckpts)
    assert CrossEncoderTrainer.latest_checkpoint(ckpts / "listnet").name == "checkpoint-2"
    trained_from = []

    def recorded(self, batch):
        trained_from.append(self.step)
        return original(self, batch)

    monkeypatch.setattr(CrossEncoderTrainer, "compute_loss", recorded)

    real_score = bench.score_pairs
    calls = []

    def killed_while_scoring(ranker, queries, texts, batch, bf16):
        calls.append(1)
        if len(calls) == 1:  # the untrained scores are in ``out`` already: this is the trained model's first split
            raise KeyboardInterrupt
        return real_score(ranker, queries, texts, batch, bf16)

    monkeypatch.setattr(bench, "score_pairs", killed_while_scoring)
    with pytest.raises(KeyboardInterrupt):
        bench.train_all(bundle, out, _config(bench), "cpu", checkpoints=ckpts)
    assert trained_from == [2, 3]  # continued after checkpoint-2, not from the start
    assert (ckpts / "listnet" / "training_log.json").is_file()

    monkeypatch.setattr(CrossEncoderTrainer, "train", lambda self: pytest.fail("a trained run must not train again"))
    log = bench.train_all(bundle, out, _config(bench), "cpu", checkpoints=ckpts)
    run = log["runs"]["listnet"]
    assert run["steps"] == 4 and [p["step"] for p in run["curve"]] == [0, 2, 4]
    assert [p["step"] for p in run["curve"]] == [p["step"] for p in whole["runs"]["listnet"]["curve"]]
    assert not (ckpts / "listnet").exists()
    got = np.load(out / "scores.npz")
    for key in ("listnet_dev", "listnet_test", "untrained_test"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    assert json.loads((out / "train_log.json").read_text())["runs"]["listnet"]["steps"] == 4


def test_a_seed_rerun_in_another_precision_joins_the_job_and_records_its_own(tmp_path, bench):
    """A job trained in bf16 (a GPU, or a CPU with native bf16) is continued in fp32 on another
    machine: the new run records fp32, the old ones keep bf16; any other recipe change is refused."""
    out = tmp_path / "out"
    out.mkdir()
    scores = {"dev_qid": np.array(["q6"]), "dev_docid": np.array(["d6"]), "test_qid": np.array(["q9"]),
              "test_docid": np.array(["d9"]), "listnet_dev": np.zeros(1), "listnet_test": np.zeros(1)}
    np.savez_compressed(out / "scores.npz", **scores)
    old = _config(bench)
    old.bf16 = True
    log = {"config": json.loads(json.dumps(bench.asdict(old))), "device": "cuda", "gpu": "H200", "torch": "2.11",
           "runs": {"listnet": {"seed": 0}}}
    del log["config"]["listmle_ties"]  # a knob added after the job ran: the job ran its default
    (out / "train_log.json").write_text(json.dumps(log))
    keys = {k: scores[k] for k in ("dev_qid", "dev_docid", "test_qid", "test_docid")}
    cfg = _config(bench)
    cfg.runs = ["listnet#1"]
    resumed, _ = bench._resume(out, cfg, dict(keys))
    assert resumed["runs"]["listnet"]["precision"] == "bf16"
    assert resumed["config"]["bf16"] is False and resumed["config"]["runs"] == ["listnet", "listnet#1"]
    cfg.listmle_ties = "random"
    with pytest.raises(SystemExit, match="listmle_ties"):
        bench._resume(out, cfg, dict(keys))
    cfg.listmle_ties, cfg.learning_rate = "separate", 0.5
    with pytest.raises(SystemExit, match="learning_rate"):
        bench._resume(out, cfg, dict(keys))


def test_report_seed_means_carry_the_paired_comparison_of_their_seeds(tmp_path, bench, monkeypatch):
    import rankwise.eval.report as report_module

    # q9's positive d6 is dev query q6's positive (seen in train); q10 and q11 have unseen positives
    bundle = _bundle(tmp_path / "bundle", test_qrels={"q9": {"d9": 1, "d6": 1}, "q10": {"d12": 1}, "q11": {"d13": 1}})
    cfg = _config(bench)
    cfg.runs = ["listnet", "listnet#1"]
    bench.train_all(bundle, tmp_path / "job", cfg, "cpu")
    log_path = tmp_path / "job" / "train_log.json"
    log = json.loads(log_path.read_text())
    steps = log["runs"]["listnet"]["steps"]
    log["runs"]["listnet#1"]["steps"] = steps + 5  # as if seed 1 had run a longer schedule
    log_path.write_text(json.dumps(log))
    monkeypatch.setattr(report_module, "RESULTS_DIR", tmp_path / "results")
    rows = bench.report([tmp_path / "job"], bundle, "test CPU")
    fusion = {r["subset"]: r for r in rows if r["model"] == "bi-encoder" and r["fusion"] == "zscore"}
    for subset in ("all", "positives-unseen-in-train"):
        seeds = [r for r in rows if r["objective"] == "listnet" and r["fusion"] == "none" and r["subset"] == subset]
        mean = [r for r in seeds if r["seed"] == "mean of 2"]
        assert len(seeds) == 3 and len(mean) == 1, seeds
        mean = mean[0]
        assert mean["ndcg@10"] == pytest.approx(np.mean([r["ndcg@10"] for r in seeds if r is not mean]))
        assert mean["vs_untrained_fusion_delta"] == pytest.approx(mean["ndcg@10"] - fusion[subset]["ndcg@10"])
        assert mean["vs_untrained_fusion_ci95_low"] <= mean["vs_untrained_fusion_delta"] <= mean["vs_untrained_fusion_ci95_high"]
        assert mean["precision"] == "fp32" and mean["queries"] == (3 if subset == "all" else 2)
        assert mean["steps"] == f"{steps}/{steps + 5}"  # not seed 0's steps alone
    assert (tmp_path / "results" / "objectives_scifact_cross_encoder.json").is_file()
