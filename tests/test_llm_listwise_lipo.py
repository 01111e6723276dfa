"""LiPO-λ fine-tuning of the listwise ranker on a tiny LM: responses, grades, and learning."""

from __future__ import annotations

import doctest
import random

import pytest
import torch
from _tiny_llm import one_thread, tiny

import rankwise.train.listwise_lipo
from rankwise.rankers.listwise import ListwiseRanker, listwise_prompt
from rankwise.train.listwise_lipo import ListwiseLiPOConfig, ListwiseLiPOTrainer, order_ndcg, order_text, permutation_responses


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


def test_listwise_lipo_doctests_pass():
    result = doctest.testmod(rankwise.train.listwise_lipo)
    assert result.attempted > 0 and result.failed == 0


def test_permutation_responses_are_distinct_and_start_with_the_ideal_order():
    responses = permutation_responses([1, 0, 2, 0], 6, random.Random(1))
    assert len(responses) == 6 and len({tuple(r) for r in responses}) == 6
    assert responses[0][:2] == [2, 0] and order_ndcg(responses[0], [1, 0, 2, 0]) == pytest.approx(1.0)
    assert len(permutation_responses([1, 0], 8, random.Random(0))) == 2  # only 2! orders exist
    assert order_text([2, 0, 1]) == "[3] > [1] > [2]"


def test_listwise_lipo_steps_raise_the_ideal_orders_policy_margin():
    model, tok = tiny(seed=5)
    ranker = ListwiseRanker(model, tok)
    trainer = ListwiseLiPOTrainer(ranker, ListwiseLiPOConfig(learning_rate=3e-3, responses=4, beta=1.0))
    item = ("red", ["blue sky", "red apple", "green tree"], [0, 2, 1])
    prompt = listwise_prompt(tok, item[0], item[1])
    answers = [order_text([1, 2, 0]), order_text([0, 2, 1])]  # ideal, bad

    def margin() -> float:
        with torch.no_grad():
            lp = trainer._answer_logps(model, prompt, answers)
        return float(lp[0] - lp[1])

    before = margin()
    losses = [trainer.step([item]) for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert margin() > before + 0.5
