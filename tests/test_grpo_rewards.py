"""GRPO reward functions on hand-made cases, their doctests, and the TRL hooks we override."""

from __future__ import annotations

import doctest
import inspect

import pytest
from trl import GRPOTrainer, SFTTrainer

import rankwise.train.grpo._completions
import rankwise.train.grpo.erank_reward
import rankwise.train.grpo.iranker
import rankwise.train.grpo.rank_grpo
import rankwise.train.sft
from rankwise.train.grpo.erank_reward import erank_format_reward, erank_list_reward
from rankwise.train.grpo.iranker import iranker_format_reward, iranker_step_reward
from rankwise.train.grpo.rank_grpo import rank_ndcg_reward, rank_rewards


@pytest.mark.parametrize(
    "module", [rankwise.train.grpo.erank_reward, rankwise.train.grpo.iranker, rankwise.train.grpo.rank_grpo, rankwise.train.grpo._completions, rankwise.train.sft]
)
def test_reward_doctests_pass(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_erank_list_reward_counts_concordant_pairs_with_other_documents():
    prompts = ["d1", "d1", "d2", "d2", "e1"]
    completions = ["8", "1", "4", "4", "5"]
    qid = ["q", "q", "q", "q", "r"]
    label = [10, 10, 0, 0, 0]
    r = erank_list_reward(prompts, completions, qid=qid, label=label)
    assert r[0] == 1.0  # 8 > 4, 4: both pairs right
    assert r[1] == 0.0  # 1 < 4, 4: both wrong
    assert r[2] == 0.5  # vs 8: right; vs 1: wrong
    assert r[4] == pytest.approx(0.5)  # alone in its query: 1 - |5 - 0| / 10


def test_erank_list_reward_accepts_chat_form_and_scores_unparsable_as_zero():
    chat = [[{"role": "assistant", "content": "9"}], [{"role": "assistant", "content": "??"}]]
    assert erank_list_reward(["a", "b"], chat, qid=["q", "q"], label=[10, 0]) == [0.9, 0.0]
    assert erank_format_reward(["a", "b"], chat) == [1.0, 0.0]


def test_iranker_rewards_follow_the_step_rule():
    labels = [[2, 0, 0, 1]] * 5
    completions = ["[B]", "[C]", "[A]", "[D]", "I think none"]
    assert iranker_step_reward(["p"] * 5, completions, labels=labels) == [1.0, 1.0, 0.0, 0.0, -0.5]
    assert iranker_format_reward(["p"] * 5, completions) == [0.0, 0.0, 0.0, 0.0, -1.0]


def test_rank_rewards_log_decay_is_dcg_from_rank_k():
    labels = [1.0, 0.0, 2.0]
    r = rank_rewards([2, 1, 0], labels, 3, "log_decay")
    assert r[2] == pytest.approx(1.0 / 2.0)  # rel 1 at rank 3 / log2(4)
    assert r[1] == pytest.approx(r[2])  # rank 2 holds relevance 0
    assert r[0] == pytest.approx(2.0 + 0.5)
    assert rank_rewards([2, None], labels, 3, "exp_inf") == [2.0, 0.0, 0.0]


def test_rank_ndcg_reward_is_one_for_the_ideal_order_and_ignores_repeats():
    labels = [[0, 1, 2]] * 3
    r = rank_ndcg_reward(["p"] * 3, ["[3]\n[2]\n[1]", "[3]\n[3]\n[3]", "[1]\n[2]\n[3]"], labels=labels)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(2.0 / (2.0 + 1 / 1.5849625))
    assert r[2] < r[1]


def test_trl_hooks_we_override_still_exist_with_the_expected_signatures():
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    assert list(inspect.signature(GRPOTrainer._compute_loss).parameters) == ["self", "model", "inputs"]
    assert "num_logits_to_keep" in inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters or (
        "logits_to_keep" in inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    )
    assert "compute_loss" in SFTTrainer.__dict__ and "_set_signature_columns_if_needed" in SFTTrainer.__dict__
    src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'inputs["advantages"]' in src and "old_per_token_logps" in src
