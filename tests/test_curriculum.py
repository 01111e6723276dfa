"""Curriculum heuristics and the linear annealing schedule."""

import pytest
import torch

from rankwise.train.curriculum import (
    CurriculumSchedule, curriculum_weights, list_ease, normalised_score_ease, pairwise_ease, reciprocal_rank_ease,
)
from rankwise.train.losses import make_objective


def test_reciprocal_rank_ease_hand_values():
    ranks = torch.tensor([[1, 2, 5, 101]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(reciprocal_rank_ease(ranks, labels), torch.tensor([[1.0, 0.5, 0.2, 1 - 1 / 101]]))


def test_normalised_score_ease_min_max_per_list_and_flat_list():
    scores = torch.tensor([[10.0, 5.0, 0.0], [3.0, 3.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ease = normalised_score_ease(scores, labels)
    assert torch.allclose(ease[0], torch.tensor([1.0, 0.5, 1.0]))
    assert torch.allclose(ease[1], torch.tensor([0.5, 0.5, 0.5]))


def test_normalised_score_ease_ignores_padding():
    scores = torch.tensor([[10.0, 0.0, 1e9]])
    mask = torch.tensor([[True, True, False]])
    ease = normalised_score_ease(scores, torch.tensor([[1.0, 0.0, 0.0]]), mask)
    assert torch.allclose(ease[0, :2], torch.tensor([1.0, 1.0]))


def test_pairwise_ease_only_on_positive_negative_pairs():
    scores = torch.tensor([[0.0, 10.0, 5.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    ease = pairwise_ease(scores, labels)
    assert ease[0, 0, 1].item() == pytest.approx(0.0)  # positive scored far below the negative: hardest
    assert ease[0, 0, 2].item() == pytest.approx(0.25)
    assert ease[0, 1, 2].item() == 1.0


def test_list_ease_balances_relevant_and_non_relevant():
    item = torch.tensor([[0.2, 1.0, 1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert list_ease(item, labels).item() == pytest.approx(0.6)


def test_schedule_anneals_linearly_to_one():
    sched = CurriculumSchedule(m=4)
    d = torch.tensor([0.0, 0.5])
    assert torch.allclose(sched.weight(d, 0), d)
    assert torch.allclose(sched.weight(d, 2), torch.tensor([0.5, 0.75]))
    assert torch.allclose(sched.weight(d, 4), torch.ones(2))
    assert torch.allclose(sched.weight(d, 100), torch.ones(2))
    with pytest.raises(ValueError, match="m must be > 0"):
        CurriculumSchedule(m=0)


@pytest.mark.parametrize("heuristic", ["bm25-rr", "bm25-score"])
@pytest.mark.parametrize("objective", ["pointwise", "ranknet", "listnet", "listmle", "lambdaloss", "lipo", "ranklist"])
def test_list_weights_work_with_every_objective(heuristic, objective):
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    ranks = torch.tensor([[1, 2, 3], [30, 1, 2]])
    scores = torch.tensor([[9.0, 5.0, 4.0], [1.0, 9.0, 8.0]])
    w = curriculum_weights(heuristic, CurriculumSchedule(10), 0, labels, mask, ranks, scores)
    assert w.shape == (2,) and w[0] > w[1]  # the query BM25 already solves is the easier one
    logits = torch.randn(2, 3, requires_grad=True)
    value = make_objective(objective)(logits, labels, mask, weights=w)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("objective", ["ranknet", "lambdaloss", "lipo", "ranklist"])
def test_pair_weights_work_with_pairwise_objectives(objective):
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    w = curriculum_weights("bm25-pair", CurriculumSchedule(10), 0, labels, mask, torch.tensor([[3, 1, 2]]), torch.tensor([[1.0, 9.0, 5.0]]))
    assert w.shape == (1, 3, 3)
    assert torch.isfinite(make_objective(objective)(torch.randn(1, 3), labels, mask, weights=w))
