"""Rank-GRPO: per-rank advantages, ratios and loss against a hand computation; trainer steps."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny_llm import one_thread, tiny

from rankwise.train.grpo.rank_grpo import rank_advantages, rank_grpo_loss, rank_rewards, token_rank_index


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


def test_rank_advantages_normalise_each_rank_across_the_group():
    # one prompt, G = 2 samples, N = 2 ranks (exp_inf rewards)
    rewards = torch.tensor([rank_rewards([0, 1], [1.0, 0.0], 2, "exp_inf"), rank_rewards([1, 0], [1.0, 0.0], 2, "exp_inf")])
    adv = rank_advantages(rewards, num_generations=2)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)  # (1 - 0.5) / (unbiased std of {1, 0} + 1e-4)
    assert adv.flatten().tolist() == pytest.approx([a, -a, -a, a], rel=1e-6)


def test_rank_grpo_ratios_and_loss_equal_a_hand_computation():
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    # sample 0: tokens of rank 0, rank 0, rank 1, rank 1, EOS (own ratio); sample 1: rank 0, rank 1, pad
    logps = torch.tensor([[-1.0, -2.0, -1.5, -0.5, -0.1], [-1.0, -1.0, -3.0, 0.0, 0.0]])
    old = torch.tensor([[-1.1, -2.3, -1.3, -0.5, -0.2], [-0.9, -1.0, -3.0, 0.0, 0.0]])
    adv = torch.tensor([[a, a, -a, -a, 0.1], [-a, a, 0.0, 0.0, 0.0]])
    rank = torch.tensor([[0, 0, 1, 1, -1], [0, 1, -1, -1, -1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    loss, ratio = rank_grpo_loss(logps, old, adv, rank, mask, n_ranks=2, epsilon_low=0.06, epsilon_high=0.08)
    w00 = math.exp((0.1 + 0.3) / 2)  # rank 0 of sample 0: geometric mean of e^0.1, e^0.3 = e^0.2 -> clipped to 1.08
    w01 = math.exp((-0.2 + 0.0) / 2)  # e^-0.1 = 0.905 -> clipped to 0.94 (advantage < 0: min picks the clipped term)
    w0e = math.exp(0.1)  # EOS: its own token ratio
    w10 = math.exp(-0.1)
    w11 = 1.0
    assert ratio[0, :5].tolist() == pytest.approx([w00, w00, w01, w01, w0e], rel=1e-6)
    assert ratio[1, :2].tolist() == pytest.approx([w10, w11], rel=1e-6)
    per_token = [
        -min(w00 * a, 1.08 * a), -min(w00 * a, 1.08 * a),
        -min(w01 * -a, 0.94 * -a), -min(w01 * -a, 0.94 * -a),
        -min(w0e * 0.1, 1.08 * 0.1),
        -min(w10 * -a, 0.94 * -a), -min(w11 * a, w11 * a),
    ]
    assert float(loss) == pytest.approx(sum(per_token) / 7, rel=1e-6)


def test_rank_grpo_loss_adds_k3_kl_to_the_reference():
    logps = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0]])
    loss, _ = rank_grpo_loss(logps, logps.detach(), torch.zeros(1, 2), torch.tensor([[0, 0]]), torch.ones(1, 2), 1, beta=0.5, ref_logps=ref)
    k3 = math.exp(-0.5) + 0.5 - 1
    assert float(loss) == pytest.approx(0.5 * k3 / 2, rel=1e-6)
    with pytest.raises(ValueError):
        rank_grpo_loss(logps, logps, torch.zeros(1, 2), torch.tensor([[0, 0]]), torch.ones(1, 2), 1, beta=0.5)


def test_token_rank_index_counts_newlines_before_each_token():
    _, tok = tiny()
    ids = tok("[2]\n[1]\n", add_special_tokens=False)["input_ids"]
    index = token_rank_index(tok, ids)
    text = [tok.decode([i]) for i in ids]
    first_line = "".join(t for t, k in zip(text, index) if k == 0)
    assert first_line == "[2]\n" and index[-1] == 1
