"""A few GRPO / Rank-GRPO / SFT steps on a tiny warmed-up LM run and change the weights."""

from __future__ import annotations

import random

import pytest
import torch
from _tiny_llm import one_thread, tiny, warm_up
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from rankwise.rankers.erank import erank_prompt
from rankwise.rankers.listwise import listwise_prompt
from rankwise.train.grpo.erank_reward import erank_format_reward, erank_list_reward
from rankwise.train.grpo.iranker import iranker_format_reward, iranker_states, iranker_step_reward
from rankwise.train.grpo.rank_grpo import RankGRPOConfig, RankGRPOTrainer, rank_ndcg_reward
from rankwise.train.sft import CurriculumSFTConfig, erank_sft_examples, train_sft

DOCS = ["red apple", "blue sky", "green tree"]
LABELS = [2, 0, 1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


def _config(cls, **kw):
    return cls(
        output_dir="/tmp/rankwise-test-grpo", per_device_train_batch_size=8, num_generations=4, max_steps=2,
        learning_rate=5e-3, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, temperature=1.0, **kw,
    )


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(model, before) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_erank_grpo_steps_change_weights():
    model, tok = tiny(seed=1)
    rows = [{"prompt": erank_prompt(tok, "red", d), "completion": str(s) + tok.eos_token} for d, s in zip(DOCS, (9, 0, 5))]
    warm_up(model, tok, rows * 4, steps=40)
    data = Dataset.from_list([{"prompt": erank_prompt(tok, "red", d), "qid": "q", "label": 5 * l} for d, l in zip(DOCS, LABELS)] * 2)
    before = _snapshot(model)
    trainer = GRPOTrainer(
        model, reward_funcs=[erank_list_reward, erank_format_reward], train_dataset=data, processing_class=tok,
        args=_config(GRPOConfig, max_completion_length=3, shuffle_dataset=False, beta=0.0),
    )
    trainer.train()
    assert _changed(model, before)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_iranker_grpo_steps_change_weights():
    model, tok = tiny(seed=2)
    rows = iranker_states(tok, "red", DOCS, LABELS, random.Random(0))
    letters = "ABC"
    warm_up(model, tok, [{"prompt": r["prompt"], "completion": f"[{c}]" + tok.eos_token} for r in rows for c in letters] * 2, steps=40)
    before = _snapshot(model)
    trainer = GRPOTrainer(
        model, reward_funcs=[iranker_step_reward, iranker_format_reward], train_dataset=Dataset.from_list(rows * 4),
        processing_class=tok, args=_config(GRPOConfig, max_completion_length=4, beta=0.0),
    )
    trainer.train()
    assert _changed(model, before)


@pytest.fixture(scope="module")
def list_model(tmp_path_factory):
    model, tok = tiny(seed=3)
    prompt = listwise_prompt(tok, "red", DOCS)
    perms = ["[1]\n[2]\n[3]\n", "[3]\n[1]\n[2]\n", "[2]\n[3]\n[1]\n", "[1]\n[3]\n[2]\n"]
    warm_up(model, tok, [{"prompt": prompt, "completion": p + tok.eos_token} for p in perms] * 2, steps=40)
    path = tmp_path_factory.mktemp("list-model")
    model.save_pretrained(path)  # TRL builds the KL reference from the policy's path
    tok.save_pretrained(path)
    return model, tok, prompt, path


def test_rank_grpo_trainer_steps_change_weights_and_spread_rank_advantages(list_model):
    _, tok, prompt, path = list_model
    config = _config(RankGRPOConfig, max_completion_length=12, beta=1e-3, n_ranks=3)
    trainer = RankGRPOTrainer(str(path), args=config, processing_class=tok,
                              train_dataset=Dataset.from_list([{"prompt": prompt, "labels": LABELS}] * 8))
    model = trainer.model
    before = _snapshot(model)
    trainer.train()
    assert _changed(model, before)
    assert any("kl" in h for h in trainer.state.log_history)
    assert any("rank_ratio_mean" in h for h in trainer.state.log_history)
    # per-token targets for two hand-written completions of one prompt (G = 2)
    trainer.num_generations = 2
    texts = ["[1]\n[3]\n[2]\n" + tok.eos_token, "[2]\n" + tok.eos_token]
    enc = tok(texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    adv, rank = trainer._rank_targets([{"labels": LABELS}] * 2, enc["input_ids"], enc["attention_mask"])
    n0 = len(tok("[1]\n", add_special_tokens=False)["input_ids"])
    assert rank[0, :n0].tolist() == [0] * n0 and rank[0, n0] == 1
    eos0 = int(enc["attention_mask"][0].sum()) - 1
    assert adv[0, eos0] == pytest.approx(0.1) and rank[0, eos0] == -1  # EOS after exactly N items
    eos1 = int(enc["attention_mask"][1].sum()) - 1
    assert adv[1, eos1] == pytest.approx(-0.1)  # EOS after fewer items
    assert adv[0, 0] > 0 > adv[1, 0]  # rank 1: label 2 beats label 0


def test_sequence_grpo_on_ranked_lines_changes_weights(list_model):
    model, tok, prompt, _ = list_model
    before = _snapshot(model)
    trainer = GRPOTrainer(model, reward_funcs=[rank_ndcg_reward], processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": prompt, "labels": LABELS}] * 8),
                          args=_config(GRPOConfig, max_completion_length=12, beta=0.0))
    trainer.train()
    assert _changed(model, before)


def test_curriculum_sft_weights_samples_and_changes_weights():
    model, tok = tiny(seed=4)
    rows = erank_sft_examples(tok, {"q": "red"}, {"q": [("red apple", 1, 1), ("blue sky", 0, 2)]})
    assert [r["completion"] for r in rows] == ["10" + tok.eos_token, "0" + tok.eos_token]
    assert [r["ease"] for r in rows] == [1.0, 0.5]
    before = _snapshot(model)
    config = CurriculumSFTConfig(output_dir="/tmp/rankwise-test-sft", max_steps=2, per_device_train_batch_size=2,
                                 use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, curriculum_m=4,
                                 logging_steps=1)
    trainer = train_sft(model, tok, rows, config)
    assert _changed(model, before)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_sft_model_copies_run_their_own_weights():
    # bf16 SFT must not leave accelerate's forward wrapper behind: a deepcopy (one policy per RL run)
    # would otherwise keep computing with the original's weights, and RL would seem not to learn.
    import copy

    model, tok = tiny(seed=5)
    rows = [{"prompt": erank_prompt(tok, "q", "red apple"), "completion": "7" + tok.eos_token}] * 4
    config = CurriculumSFTConfig(output_dir="/tmp/rankwise-test-sft-copy", max_steps=1, per_device_train_batch_size=2, bf16=True,
                                 use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True)
    train_sft(model, tok, rows, config)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn_like(p))
    ids = tok("red apple", return_tensors="pt")["input_ids"]
    assert not torch.allclose(twin(input_ids=ids).logits, model(input_ids=ids).logits)


def test_sft_loss_reads_only_completion_positions_and_equals_the_full_token_mean():
    """The trainer's loss (logits only where a completion token is trained) equals the plain token mean
    of −log p over the completion tokens computed from the full logits, on a padded batch of unequal
    prompts and completions, with and without a curriculum weight of 1."""
    model, tok = tiny(seed=6)
    rows = erank_sft_examples(tok, {"q": "red", "p": "a much longer query about the colour of things"},
                              {"q": [("red apple", 1, 1), ("blue sky over the sea", 0, 2)], "p": [("crimson", 1, 1)]})
    config = CurriculumSFTConfig(output_dir="/tmp/rankwise-test-sft-loss", max_steps=1, per_device_train_batch_size=3,
                                 use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True)
    from rankwise.train.sft import CurriculumSFTTrainer

    trainer = CurriculumSFTTrainer(model=model, args=config, processing_class=tok,
                                   train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "completion")} for r in rows]))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    labels = batch["labels"][:, 1:]
    assert (labels != -100).sum() < labels.numel() / 4  # mostly prompt: the saving is real
    seen = {}
    forward = model.forward

    def spy(*args, **kwargs):
        seen["keep"] = kwargs.get("logits_to_keep")
        return forward(*args, **kwargs)

    model.forward = spy
    with torch.no_grad():
        got = trainer.compute_loss(model, dict(batch)).item()
        full = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(full.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    assert got == pytest.approx((nll / (labels != -100).sum()).item(), rel=1e-5)
    assert seen["keep"] is not None and 0 < len(seen["keep"]) < labels.shape[1]
