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


# --- issue #19: blank lines, scale_rewards, default reward, the TRL hooks we override ------------------------


def test_token_rank_index_skips_blank_lines_like_the_parser():
    from rankwise.train.grpo.rank_grpo import parse_ranked_lines

    _, tok = tiny()
    text = "[2]\n\n[1]\n \n[3]\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    index = token_rank_index(tok, ids)
    pieces = [tok.decode([i]) for i in ids]
    items = parse_ranked_lines(text, 3)
    assert items == [1, 0, 2]
    for k, item in enumerate(items):  # the tokens of rank k are exactly the k-th parsed item's line
        line = "".join(p for p, r in zip(pieces, index) if r == k).strip()
        assert line == f"[{item + 1}]"
    assert max(index) == 2


@pytest.mark.parametrize("scale", ["group", "batch", "none", True, False])
def test_rank_advantages_follow_trl_scale_rewards(scale):
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 1.0], [1.0, 1.0]])  # 2 prompts x G = 2, N = 2
    adv = rank_advantages(rewards, num_generations=2, scale=scale)
    centred = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    if scale in ("none", False):
        assert torch.allclose(adv, centred)
    elif scale in ("group", True):
        group_std = torch.tensor([[math.sqrt(0.5), 0.0], [math.sqrt(0.5), 0.0], [math.sqrt(2.0), 0.0], [math.sqrt(2.0), 0.0]])
        assert torch.allclose(adv, centred / (group_std + 1e-4))
    else:
        assert torch.allclose(adv, centred / (rewards.std(dim=0) + 1e-4))
    with pytest.raises(ValueError, match="scale"):
        rank_advantages(rewards, 2, scale="rank")


def test_rank_grpo_default_per_rank_reward_is_exp_inf():
    from rankwise.train.cli_llm import RankReward
    from rankwise.train.grpo.rank_grpo import RankGRPOConfig

    assert RankGRPOConfig(output_dir="/tmp/rankwise-test-rank-grpo-cfg", use_cpu=True).rank_reward == "exp_inf"
    assert rank_rewards([1, 0], [0.0, 2.0], 2) == [2.0, 0.0]  # the rank's own relevance
    assert list(RankReward)[0] is RankReward.exp_inf


LABELS = [2, 0, 1]


@pytest.fixture(scope="module")
def rank_trainer(tmp_path_factory):
    from datasets import Dataset

    from rankwise.rankers.listwise import listwise_prompt
    from rankwise.train.grpo.rank_grpo import RankGRPOConfig, RankGRPOTrainer

    model, tok = tiny(seed=3)
    path = tmp_path_factory.mktemp("rank-grpo-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    prompt = listwise_prompt(tok, "red", ["red apple", "blue sky", "green tree"], "lines")
    config = RankGRPOConfig(
        output_dir=str(path / "out"), per_device_train_batch_size=2, num_generations=2, max_steps=1, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, max_completion_length=8, n_ranks=3, beta=1e-3,
        bf16=False,
    )
    trainer = RankGRPOTrainer(str(path), args=config, processing_class=tok,
                              train_dataset=Dataset.from_list([{"prompt": prompt, "labels": LABELS}] * 4))
    return trainer, tok, prompt


def _targets(trainer, tok, texts):
    enc = tok([t + tok.eos_token for t in texts], add_special_tokens=False, padding=True, padding_side="right",
              return_tensors="pt")
    adv, rank = trainer._rank_targets([{"labels": LABELS}] * len(texts), enc["input_ids"], enc["attention_mask"])
    return enc["input_ids"], adv, rank


def test_rank_targets_credit_each_item_with_its_own_rank_across_blank_lines(rank_trainer):
    trainer, tok, _ = rank_trainer
    ids, adv, rank = _targets(trainer, tok, ["[1]\n\n[3]\n[2]\n", "[2]\n[1]\n[3]\n"])
    pieces = [tok.decode([i]) for i in ids[0].tolist()]
    for k, item in enumerate(["[1]", "[3]", "[2]"]):  # the blank line is no rank: "[3]" is rank 1, "[2]" rank 2
        assert "".join(p for p, r in zip(pieces, rank[0].tolist()) if r == k).strip() == item
    blank = [t for t in range(1, len(pieces)) if pieces[t] == "\n" and pieces[t - 1].endswith("\n")]
    assert blank and all(rank[0, t] == -1 and adv[0, t] == 0 for t in blank)
    # exp_inf, G = 2: rank 1 holds "[3]" (label 1) in sample 0 and "[1]" (label 2) in sample 1
    assert adv[0, rank[0] == 1].unique().tolist() == pytest.approx([-1 / (math.sqrt(0.5) + 1e-4) / 2])
    assert adv[1, rank[1] == 1].unique().tolist() == pytest.approx([1 / (math.sqrt(0.5) + 1e-4) / 2])


def test_rank_targets_honour_scale_rewards(rank_trainer):
    trainer, tok, _ = rank_trainer
    texts = ["[1]\n[3]\n[2]\n", "[2]\n[1]\n[3]\n"]
    first = 1  # a token of item 1, "1" / "2"
    scaled = _targets(trainer, tok, texts)[1][:, first]
    trainer.args.scale_rewards = "none"
    try:
        unscaled = _targets(trainer, tok, texts)[1][:, first]
    finally:
        trainer.args.scale_rewards = "group"
    # rank 0 rewards (exp_inf) 2 and 0: centred ±1, group std sqrt(2)
    assert unscaled.tolist() == pytest.approx([1.0, -1.0])
    assert scaled.tolist() == pytest.approx([1.0 / (math.sqrt(2.0) + 1e-4), -1.0 / (math.sqrt(2.0) + 1e-4)])


def test_rank_grpo_overridden_trl_hooks_run_on_the_installed_trl(rank_trainer):
    """Fails when a TRL release changes a private hook we override (signature, return tuple, output keys)."""
    import tomllib
    from pathlib import Path

    import trl
    from packaging.specifiers import SpecifierSet

    trainer, tok, prompt = rank_trainer
    pin = next(d for d in tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("trl"))
    spec = SpecifierSet(pin.removeprefix("trl"))
    assert trl.__version__ in spec, f"installed trl {trl.__version__} outside {pin}"
    # _get_per_token_logps_and_entropies returned 2 values before TRL 1.7; untested releases stay out
    assert "1.6.0" not in spec and "0.20.0" not in spec and "1.17.0" not in spec
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by transformers' training loop
    batch = trainer._generate_and_score_completions([{"prompt": prompt, "labels": LABELS}] * 2)
    B, T = batch["completion_ids"].shape
    assert batch["advantages"].shape == (B, T) and batch["rank_index"].shape == (B, T)
    assert torch.isfinite(trainer._compute_loss(trainer.model, batch))
    batch["advantages"] = torch.ones_like(batch["advantages"])  # a random model's samples may all tie
    loss = trainer._compute_loss(trainer.model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in trainer.model.parameters())
    trainer.model.zero_grad()
