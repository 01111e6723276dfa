"""Regression tests for the trainer's defects of issue 19: the pointwise start, the learning-rate
schedule over the steps actually run, the cross-encoder's pooling, early stopping with the best
checkpoint, and the device argument."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig, load_trainable
from rankwise.train.dev_eval import dev_ndcg_evaluator, split_dev_queries
from test_train_cross_encoder import _tiny_dir, lists  # noqa: F401  (fixture)


def test_pointwise_start_sets_head_bias_to_the_logit_of_the_positive_rate(tmp_path, lists):  # noqa: F811
    # regression: the head started at bias 0, so BCE first learned the label prior and stalled there
    ce = CrossEncoder.from_pretrained(_tiny_dir(tmp_path, head=True), max_length=48)
    rate = sum(y > 0 for lst in lists for y in lst.labels) / sum(len(lst.labels) for lst in lists)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective="pointwise", max_steps=1, lists_per_step=2,
                                    learning_rate=0.0, progress=False)
    summary = CrossEncoderTrainer(ce, lists, cfg).train()
    assert ce.model.classifier.bias.item() == pytest.approx(math.log(rate / (1 - rate)), abs=1e-5)
    assert summary["head_init"]["positive_rate"] == pytest.approx(rate)
    off = CrossEncoder.from_pretrained(_tiny_dir(tmp_path / "b", head=True), max_length=48)
    CrossEncoderTrainer(off, lists, CrossEncoderTrainerConfig(str(tmp_path / "o2"), objective="listnet", max_steps=1,
                                                              lists_per_step=2, learning_rate=0.0, progress=False)).train()
    assert off.model.classifier.bias.item() == 0.0  # other objectives are shift-invariant: untouched


def test_pointwise_positive_weight_raises_the_positive_term():
    from rankwise.train.losses import PointwiseBCELoss

    s, y = torch.tensor([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    plain, weighted = PointwiseBCELoss()(s, y).item(), PointwiseBCELoss(pos_weight=3.0)(s, y).item()
    assert weighted == pytest.approx((3 * math.log(2) + 3 * math.log(2)) / 4)
    assert plain == pytest.approx(math.log(2))


def test_learning_rate_decays_to_zero_over_the_steps_actually_run(tmp_path, lists):  # noqa: F811
    # regression: the schedule decayed over max_steps even when the list stream ended long before
    ce = CrossEncoder.from_pretrained(_tiny_dir(tmp_path, head=True), max_length=48)
    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective="listnet", max_steps=100, lists_per_step=4,
                                    learning_rate=1e-3, warmup_ratio=0.34, progress=False)
    trainer = CrossEncoderTrainer(ce, lists, cfg)  # 12 lists / 4 per step = 3 steps
    assert trainer.total_steps == 3
    rates = []
    for _ in range(3):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    assert rates[0] == pytest.approx(1e-3) and rates[-1] < 1e-3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_mean_pooling_reads_the_masked_mean_and_round_trips(tmp_path, lists):  # noqa: F811
    path = _tiny_dir(tmp_path, head=True)
    ce = CrossEncoder.from_pretrained(path, max_length=48, pooling="mean")
    ce.model.eval()
    batch = ce.tokenize(["a query", "another query here"], ["a doc", "a longer document text"])
    hidden = ce.model.base_model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    want = ce.model.classifier((hidden * m).sum(1) / m.sum(1)).squeeze(-1)
    assert torch.allclose(ce.pair_logits(**batch), want, atol=1e-6)
    cls = CrossEncoder.from_pretrained(path, max_length=48)
    assert not torch.allclose(cls.pair_logits(**batch), want, atol=1e-4)
    ce.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "rankwise.json").read_text())["pooling"] == "mean"
    again = CrossEncoder.from_pretrained(tmp_path / "saved")
    assert again.pooling == "mean" and torch.allclose(again.pair_logits(**batch), want, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        CrossEncoder.from_pretrained(path, pooling="max")


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, lists):  # noqa: F811
    ce = CrossEncoder.from_pretrained(_tiny_dir(tmp_path, head=True), max_length=48)
    seen: dict[int, list[torch.Tensor]] = {}
    values = iter([0.1, 0.5, 0.3, 0.2, 0.9])  # best after step 2; patience 2 stops at step 6

    def evaluator(ranker):
        step = len(seen) * 2
        seen[step] = [p.detach().clone() for p in ranker.model.parameters()]
        return next(values)

    cfg = CrossEncoderTrainerConfig(str(tmp_path / "out"), objective="listnet", max_steps=50, lists_per_step=1,
                                    learning_rate=1e-2, eval_steps=2, patience=2, progress=False)
    summary = CrossEncoderTrainer(ce, lists, cfg, evaluator=evaluator).train()
    assert [p["step"] for p in summary["curve"]] == [0, 2, 4, 6]
    assert summary["best"] == {"step": 2, "dev": 0.5} and summary["stopped_early"] and summary["steps"] == 6
    for a, b in zip(seen[2], ce.model.parameters()):  # the final model is the step-2 one
        assert torch.allclose(a, b.detach(), atol=1e-6)
    saved = CrossEncoder.from_pretrained(tmp_path / "out")
    for a, b in zip(seen[2], saved.model.parameters()):
        assert torch.allclose(a, b.detach(), atol=1e-6)
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert log["curve"][1] == {"step": 2, "dev": 0.5}


def test_dev_evaluator_scores_real_ndcg(tmp_path, lists):  # noqa: F811
    qrels = {lst.qid: {d: int(y) for d, y in zip(lst.docids, lst.labels) if y > 0} for lst in lists}
    fit, dev = split_dev_queries(qrels, 0.25, seed=0)
    assert len(dev) == 3 and not set(fit) & set(dev)
    by_q = {lst.qid: lst for lst in lists}
    candidates = {q: list(zip(by_q[q].docids, by_q[q].docs)) for q in dev}

    class Oracle:  # scores the positive highest: nDCG@10 = 1
        def logits(self, queries, docs):
            return torch.tensor([1.0 if any(d == t and by_q[q].labels[i] > 0 for q in dev for i, t in enumerate(by_q[q].docs)) else 0.0
                                 for d in docs])

    assert dev_ndcg_evaluator({q: by_q[q].query for q in dev}, candidates, qrels)(Oracle()) == pytest.approx(1.0)


def test_device_argument_places_the_model(tmp_path):
    model = load_trainable("cross-encoder", _tiny_dir(tmp_path, head=True), 48, device="cpu")
    assert next(model.model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="cuda"):
        if not torch.cuda.is_available():
            load_trainable("cross-encoder", _tiny_dir(tmp_path / "c", head=True), 48, device="cuda")
        else:
            raise ValueError("cuda present: nothing to refuse")
