"""Family contract of the sequential recommenders: shapes, padding invariance, training, save/load."""

import atexit
import functools
import shutil
import tempfile

import pytest
import torch

from tests._train import adam_steps

from rankwise.recsys import (HCN, HLLM, HSTU, HCNConfig, HLLMConfig, HSTUConfig, ReaRec, ReaRecConfig, ReaRecHSTU,
                             ReaRecHSTUConfig, SASRec, SASRecConfig, load_recommender)

N_ITEMS, D, L = 40, 16, 8
TEXTS = [f"title: item {i} genres: g{i % 5}" for i in range(N_ITEMS)]


@functools.lru_cache(maxsize=1)
def _tiny_decoder_dir() -> str:
    """A randomly initialised 2-layer Llama (hidden D) saved as an HF directory: HLLM's user LLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tempfile.mkdtemp(prefix="rankwise-tiny-llama-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=D, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).save_pretrained(path)
    return path


def _tiny(kind: str):
    torch.manual_seed(0)
    common = {"n_items": N_ITEMS, "hidden": D, "max_len": L, "dropout": 0.0}
    return {
        "sasrec-ce": lambda: SASRec(SASRecConfig(**common, loss="ce")),
        "sasrec-sampled": lambda: SASRec(SASRecConfig(**common, loss="sampled", n_negatives=8)),
        "rearec-erl": lambda: ReaRec(ReaRecConfig(**common, reasoning_steps=2, objective="erl")),
        "rearec-prl": lambda: ReaRec(ReaRecConfig(**common, reasoning_steps=2, objective="prl", prl_warmup_epochs=0)),
        "rearec-erl-sampled": lambda: ReaRec(ReaRecConfig(**common, reasoning_steps=2, objective="erl", loss="sampled",
                                                          n_negatives=8)),
        "rearec-prl-sampled": lambda: ReaRec(ReaRecConfig(**common, reasoning_steps=2, objective="prl", loss="sampled",
                                                          n_negatives=8, prl_warmup_epochs=0)),
        "rearec-hstu-erl": lambda: ReaRecHSTU(ReaRecHSTUConfig(**common, n_heads=2, reasoning_steps=2, objective="erl")),
        "rearec-hstu-prl-sampled": lambda: ReaRecHSTU(ReaRecHSTUConfig(**common, n_heads=2, reasoning_steps=2, objective="prl",
                                                                       loss="sampled", n_negatives=8, prl_warmup_epochs=0)),
        "hcn-attention": lambda: HCN(HCNConfig(**common, n_interests=3, short_len=3)),
        "hcn-max": lambda: HCN(HCNConfig(**common, n_interests=3, scoring="max")),
        "hstu": lambda: HSTU(HSTUConfig(**common, n_heads=2, n_negatives=8)),
        "hllm-frozen": lambda: HLLM(HLLMConfig(**common, n_negatives=16, max_text_len=16), item_texts=TEXTS),
        "hllm-frozen-id-vectors": lambda: HLLM(HLLMConfig(**common, n_negatives=16, max_text_len=16, item_id_vectors=True),
                                               item_texts=TEXTS),
        "hllm-frozen-catalog-mlp": lambda: HLLM(HLLMConfig(**common, n_negatives=0, adapter="mlp", max_text_len=16),
                                                item_texts=TEXTS),
        "hllm-user-llm": lambda: HLLM(HLLMConfig(**{**common, "hidden": 8}, user_llm=_tiny_decoder_dir(), n_negatives=16,
                                                 max_text_len=16), item_texts=TEXTS),
    }[kind]()


KINDS = ["sasrec-ce", "sasrec-sampled", "rearec-erl", "rearec-prl", "rearec-erl-sampled", "rearec-prl-sampled",
         "rearec-hstu-erl", "rearec-hstu-prl-sampled",
         "hcn-attention", "hcn-max", "hstu", "hllm-frozen", "hllm-frozen-id-vectors", "hllm-frozen-catalog-mlp", "hllm-user-llm"]


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, N_ITEMS + 1, (6, L), generator=g)
    seq[:2, :3] = 0  # left padding
    target = torch.randint(1, N_ITEMS + 1, (6, L), generator=g) * (seq > 0)
    return {"item_seq": seq, "target": target, "epoch": 3}


@pytest.mark.parametrize("kind", KINDS)
def test_model_surface_shapes(kind):
    model = _tiny(kind).eval()
    batch = _batch()
    users = model.encode_users(batch["item_seq"])
    expected = (6, 3, D) if kind == "hcn-max" else (6, D)
    assert users.shape == expected
    assert model.item_embeddings().shape == (N_ITEMS + 1, D)
    scores = model.full_sort_predict(batch)
    assert scores.shape == (6, N_ITEMS) and torch.isfinite(scores).all()
    assert model.calculate_loss(batch).dim() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_does_not_change_the_user(kind):
    model = _tiny(kind).eval()
    short = torch.tensor([[3, 9, 4]])
    padded = torch.tensor([[0, 0, 0, 3, 9, 4]])
    torch.testing.assert_close(model.encode_users(short), model.encode_users(padded), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_lower_the_loss_and_change_parameters(kind):
    model = _tiny(kind).train()
    batch = _batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    first = model.calculate_loss(batch).item()
    adam_steps(model, batch, 40 if kind == "hllm-frozen-catalog-mlp" else 15)  # the whole catalog's softmax learns more slowly
    torch.manual_seed(0)
    last = model.calculate_loss(batch).item()
    assert torch.isfinite(torch.tensor(last)) and last < 0.8 * first
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_roundtrip(kind, tmp_path):
    model = _tiny(kind).eval()
    model.item_ids = [f"i{i}" for i in range(N_ITEMS)]
    model.save_pretrained(tmp_path / "m", dataset="toy")
    loaded = load_recommender(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.item_ids == model.item_ids and loaded.meta["dataset"] == "toy"
    batch = _batch()
    torch.testing.assert_close(loaded.full_sort_predict(batch), model.full_sort_predict(batch))


@pytest.mark.parametrize("kind", ["sasrec-ce", "hcn-attention"])
def test_id_tables_start_at_the_hstu_scale(kind):
    """Items N(0, 0.02²), positions N(0, 1/d): 7× larger tables kept ML-1M SASRec near HR@10 0.045 for 10 epochs."""
    model = _tiny(kind)
    items, pos = model.item_emb.weight.detach(), model.pos_emb.weight.detach()
    assert torch.all(items[0] == 0)
    assert items[1:].abs().max() <= 0.04 and 0.012 < items[1:].std() < 0.025
    assert pos.abs().max() <= 2 * D**-0.5 + 1e-6 and 0.5 * D**-0.5 < pos.std() < D**-0.5


@pytest.mark.parametrize("objective", ["erl", "prl"])
def test_rearec_with_zero_steps_is_sasrec(objective):
    cfg = {"n_items": N_ITEMS, "hidden": D, "max_len": L, "dropout": 0.0, "loss": "ce", "temperature": 0.07}
    sas = SASRec(SASRecConfig(**cfg))
    rea = ReaRec(ReaRecConfig(**cfg, reasoning_steps=0, objective=objective, prl_warmup_epochs=0))
    rea.load_state_dict(sas.state_dict(), strict=False)
    batch = _batch()
    torch.testing.assert_close(rea.encode_users(batch["item_seq"]), sas.encode_users(batch["item_seq"]))
    torch.testing.assert_close(rea.calculate_loss(batch), sas.calculate_loss(batch))


def test_rearec_reasoning_at_all_positions_is_causal_and_matches_inference():
    """Training reasons at every position in one pass; inference reasons from the last one only."""
    model = _tiny("rearec-prl").eval()
    seq = _batch()["item_seq"]
    hidden, cache, mask = model.encode_sequence(seq)
    states = model.reason(hidden, cache, mask)  # K + 1 × (B, L, D)
    torch.testing.assert_close(states[-1][:, -1], model.encode_users(seq), atol=1e-5, rtol=1e-4)
    future = seq.clone()
    future[:, 5:] = torch.randint(1, N_ITEMS + 1, future[:, 5:].shape)
    h2, c2, m2 = model.encode_sequence(future)
    torch.testing.assert_close(model.reason(h2, c2, m2)[-1][:, :5], states[-1][:, :5], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reasoning_dropout", [True, False])
def test_rearec_reasoning_dropout_only_on_reasoning_inputs_in_training(reasoning_dropout):
    """With the encoder's own dropout off, reasoning is random in training exactly when reasoning
    dropout is on; in eval mode it is deterministic either way."""
    torch.manual_seed(0)
    model = ReaRec(ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, dropout=0.5, reasoning_steps=2,
                                reasoning_dropout=reasoning_dropout))
    seq = _batch()["item_seq"]
    model.eval()
    hidden, cache, mask = model.encode_sequence(seq)
    model.reason_drop.train()  # the reasoning inputs' own dropout (True: at the model's rate; False: rate 0)
    first, second = model.reason(hidden, cache, mask)[-1], model.reason(hidden, cache, mask)[-1]
    assert (not torch.allclose(first, second)) == reasoning_dropout
    model.eval()
    torch.testing.assert_close(model.reason(hidden, cache, mask)[-1], model.reason(hidden, cache, mask)[-1])


def test_hllm_whole_catalog_negatives_is_the_exact_softmax():
    """n_negatives=0: the InfoNCE denominator runs over every item once; items whose cosine to the
    target passes ``false_negative_cos`` (near-duplicates of the toy texts) drop out."""
    model = _tiny("hllm-frozen-catalog-mlp").eval()
    batch = _batch()
    table = torch.nn.functional.normalize(model.item_embeddings(), dim=-1)[1:]  # (n_items, D)
    keep = batch["target"] > 0
    y = batch["target"][keep] - 1  # (N,)
    h = torch.nn.functional.normalize(model._user_hidden(batch["item_seq"], model.item_embeddings())[keep], dim=-1)
    logits = h @ table.T * model.log_scale.exp()  # (N, n_items)
    duplicate = (table[y] @ table.T > model.config.false_negative_cos) & (torch.arange(N_ITEMS) != y[:, None])
    assert duplicate.any() and not duplicate.all()  # the masking is exercised, not everything masked
    exact = torch.nn.functional.cross_entropy(logits.masked_fill(duplicate, float("-inf")), y)
    torch.testing.assert_close(model.calculate_loss(batch), exact)


def test_hllm_config_rejects_whole_catalog_negatives_when_fine_tuning():
    with pytest.raises(ValueError, match="n_negatives=0"):
        HLLMConfig(n_items=N_ITEMS, item_mode="finetune", n_negatives=0)
    with pytest.raises(ValueError, match="adapter"):
        HLLMConfig(n_items=N_ITEMS, adapter="deep")


def test_hllm_user_llm_is_the_decoder_at_its_own_rate():
    """An HF decoder replaces the small user transformer; its width sets ``hidden``; it learns at user_llm_lr."""
    model = _tiny("hllm-user-llm")
    assert model.config.hidden == D and not hasattr(model, "encoder") and not hasattr(model, "pos_emb")
    groups = model.optimizer_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, model.config.user_llm_lr]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.user_llm.parameters()}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
    # more left padding changes nothing; the order of the items does matter (weakly, at random init)
    seq = torch.tensor([[0, 3, 9, 4]])
    model.eval()
    padded = torch.tensor([[0, 0, 0, 3, 9, 4]])
    torch.testing.assert_close(model.encode_users(seq), model.encode_users(padded), atol=1e-5, rtol=1e-4)
    assert not torch.equal(model.encode_users(seq), model.encode_users(torch.tensor([[0, 9, 3, 4]])))


def test_hllm_finetune_mode_trains_the_item_llm(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankwise.recsys.hllm import bundled_item_llm

    tok = AutoTokenizer.from_pretrained(bundled_item_llm())
    llm_dir = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    cfg = HLLMConfig(n_items=N_ITEMS, hidden=D, max_len=L, item_mode="finetune", item_llm=str(llm_dir),
                     n_negatives=8, max_text_len=24, dropout=0.0)
    model = HLLM(cfg, item_texts=TEXTS)
    assert cfg.pooling == "item_token" and model.item_vectors.abs().sum() > 0
    word = model.item_llm.llm.get_input_embeddings().weight.detach().clone()
    groups = model.optimizer_groups(1e-3)  # the pre-trained item LLM learns at its own, smaller rate
    assert [g["lr"] for g in groups] == [1e-3, cfg.item_llm_lr]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.item_llm.parameters()}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
    batch = _batch()
    first = model.calculate_loss(batch).item()
    adam_steps(model, batch, 8)
    assert model.calculate_loss(batch).item() < first
    assert not torch.equal(word, model.item_llm.llm.get_input_embeddings().weight)
    stale = model.item_vectors.clone()
    model.sync_item_tower()
    assert not torch.equal(stale, model.item_vectors)
    model.save_pretrained(tmp_path / "m")
    loaded = load_recommender(tmp_path / "m")
    torch.testing.assert_close(loaded.full_sort_predict(batch), model.eval().full_sort_predict(batch))


@pytest.mark.parametrize("kind", ["sasrec-ce", "rearec-erl", "rearec-hstu-erl", "hcn-attention", "hstu", "hllm-frozen", "hllm-user-llm"])
def test_user_tower_exports_to_onnx_with_dynamic_batch_and_length(kind, tmp_path):
    import numpy as np
    import onnxruntime as ort

    model = _tiny(kind).eval()

    class UserTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
            return self.model.encode_users(item_seq)

    path = tmp_path / "user.onnx"
    torch.onnx.export(UserTower().eval(), (torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]]),), str(path),
                      input_names=["item_seq"], output_names=["user"],
                      dynamic_axes={"item_seq": {0: "batch", 1: "length"}}, dynamo=False)
    seq = torch.tensor([[0, 0, 0, 7, 3, 4, 5, 9], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 1, 2]])
    out = ort.InferenceSession(str(path)).run(None, {"item_seq": seq.numpy()})[0]
    assert np.abs(out - model.encode_users(seq).detach().numpy()).max() < 1e-4


def test_next_item_logits_full_and_sampled_match_hand_computation(monkeypatch):
    from rankwise.recsys._seq import NextItemLogits, full_softmax_loss

    torch.manual_seed(0)
    table, hidden, target = torch.randn(11, 4), torch.randn(3, 4), torch.tensor([2, 5, 5])
    full = NextItemLogits(target, table, 0, "dot")
    assert torch.allclose(full.loss(hidden, 0.5), full_softmax_loss(hidden, target, table, "dot", 0.5))
    torch.manual_seed(1)
    negatives = torch.randint(1, 11, (3, 6))
    cand = torch.cat([target[:, None], negatives], 1)
    expect = torch.nn.functional.normalize(table[cand], dim=-1) @ torch.nn.functional.normalize(hidden, dim=-1)[:, :, None]
    expect = (expect[..., 0] / 0.1).masked_fill(torch.cat([torch.zeros(3, 1, dtype=torch.bool), negatives == target[:, None]], 1), -1e4)
    grads = []
    for full_matrix_max in (NextItemLogits.FULL_MATRIX_MAX, 0):  # column gather of the full matrix, then row gather
        monkeypatch.setattr(NextItemLogits, "FULL_MATRIX_MAX", full_matrix_max)
        torch.manual_seed(1)
        leaf = table.clone().requires_grad_()
        sampled = NextItemLogits(target, leaf, 6, "cosine")
        assert (sampled.columns is None) == (full_matrix_max == 0)
        got = sampled.logits(hidden, 0.1)
        assert got.shape == (3, 7) and torch.allclose(got, expect, atol=1e-5)
        assert torch.equal(sampled.labels, torch.zeros(3, dtype=torch.long))
        p = got.log_softmax(-1)
        assert torch.isfinite((p.exp() * p).sum())  # masked clashes give p·log p = 0, not NaN
        grads.append(torch.autograd.grad(sampled.loss(hidden, 0.1), leaf)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_hllm_item_slot_uses_right_padding_even_for_a_left_padding_tokenizer(tmp_path):
    # regression: the [ITEM] slot sits after the last real token, which assumes right padding
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankwise.recsys.hllm import bundled_item_llm

    tok = AutoTokenizer.from_pretrained(bundled_item_llm())
    tok.padding_side = "left"
    llm_dir = tmp_path / "tiny-bert-left"
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    assert AutoTokenizer.from_pretrained(llm_dir).padding_side == "left"
    cfg = HLLMConfig(n_items=N_ITEMS, hidden=D, max_len=L, item_mode="finetune", item_llm=str(llm_dir), n_negatives=8,
                     max_text_len=24, dropout=0.0)
    model = HLLM(cfg, item_texts=TEXTS)
    assert model.item_llm.tokenizer.padding_side == "right"
    model.eval()
    with torch.no_grad():  # an item's vector does not depend on the other texts in its batch (padding)
        alone = model.item_llm([TEXTS[0]])
        batched = model.item_llm([TEXTS[0], TEXTS[1] + " with a much longer description " * 3])[:1]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_rearec_authors_inputs_layernorm_items_and_drop_reasoning_at_their_own_rate(tmp_path):
    cfg = ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, n_heads=1, dropout=0.5, reasoning_dropout=0.2, input_layernorm=True)
    model = ReaRec(cfg).eval()
    assert model.reason_drop.p == 0.2 and model.input_ln is not None
    seq = torch.randint(1, N_ITEMS + 1, (3, L))
    x = model.embed(seq)  # (B, L, D): LayerNormed, so unit scale like the reasoning inputs
    assert torch.allclose(x.std(-1, unbiased=False), torch.ones(3, L), atol=1e-2)
    model.save_pretrained(tmp_path / "r")
    again = ReaRec.from_pretrained(tmp_path / "r").eval()
    assert torch.allclose(again.encode_users(seq), model.encode_users(seq), atol=1e-6)
    old = ReaRec(ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, reasoning_dropout=True, dropout=0.3))
    assert old.reason_drop.p == 0.3 and old.input_ln is None  # older configs keep their meaning


def test_prl_views_infonce_hand_value():
    import math

    from rankwise.recsys.rearec import prl_views_infonce

    v1 = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 2.0]])]
    v2 = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]
    tau = 0.5
    # step 1: sims [[2, 0], [0, 2]] -> each row CE = log(1 + e^-2); step 2: sims [[0, 4], [4, 0]] -> log(1 + e^4)
    want = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(4.0))) / 2
    assert prl_views_infonce(v1, v2, tau).item() == pytest.approx(want, rel=1e-6)


def test_prl_with_views_runs_the_batch_twice_after_warmup():
    torch.manual_seed(0)
    model = ReaRec(ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, objective="prl", prl_warmup_epochs=1, dropout=0.2))
    calls = []
    real = model.encode_sequence
    model.encode_sequence = lambda seq: (calls.append(1), real(seq))[1]
    batch = _batch()
    before = model.calculate_loss({**batch, "epoch": 0})
    assert len(calls) == 1
    after = model.calculate_loss({**batch, "epoch": 1})
    assert len(calls) == 3 and torch.isfinite(after) and after.item() != before.item()
    after.backward()


def test_erl_loss_hand_value_from_the_authors_formula():
    # L = CE(mean_k r_k) − λ · mean_{i≠j} KL(p_j ‖ p_i), with p_k = softmax(s(r_k, E)/τ); states fixed by hand
    import torch.nn.functional as F

    model = ReaRec(ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, objective="erl", reasoning_steps=2, similarity="dot",
                                temperature=0.5, erl_lambda=0.3, dropout=0.0))
    torch.manual_seed(1)
    states = [torch.randn(2, L, D) for _ in range(3)]
    model.encode_sequence = lambda seq: (states[0], None, None)
    model.reason = lambda hidden, cache, mask, noise_std=0.0: states
    target = torch.zeros(2, L, dtype=torch.long)
    target[:, -1] = torch.tensor([3, 5])
    loss = model.calculate_loss({"item_seq": torch.ones(2, L, dtype=torch.long), "target": target})
    table = model.item_embeddings()[1:]
    keep = target > 0
    logits = [(s[keep] @ table.T) / 0.5 for s in states]
    ce = F.cross_entropy((torch.stack([s[keep] for s in states]).mean(0) @ table.T) / 0.5, target[keep] - 1)
    logp = [lg.log_softmax(-1) for lg in logits]
    kls = [(logp[j].exp() * (logp[j] - logp[i])).sum(-1).mean() for j in range(3) for i in range(3) if i != j]
    want = ce - 0.3 * torch.stack(kls).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_rearec_post_ln_blocks_reason_over_the_cache_like_a_full_pass(tmp_path):
    torch.manual_seed(0)
    model = ReaRec(ReaRecConfig(n_items=N_ITEMS, hidden=D, max_len=L, post_ln=True, dropout=0.0)).eval()
    assert model.encoder.blocks[0].post_ln and isinstance(model.encoder.ln, torch.nn.Identity)
    seq = _batch()["item_seq"]
    hidden, cache, mask = model.encode_sequence(seq)
    # the first reasoning step through the cache equals running the whole sequence plus that token at once
    x = model.reason_ln(hidden[:, -1:] + model.rpe.weight[0])
    cached, _ = model.encoder.forward_cached(x, cache, mask[:, :, -1:], [])
    full_seq = torch.cat([model.embed(seq), x], 1)
    n = full_seq.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    keep = torch.cat([seq > 0, torch.ones(seq.shape[0], 1, dtype=torch.bool)], 1)
    full_mask = (causal[None] & keep[:, None, :])[:, None]
    full, _ = model.encoder(full_seq, full_mask)
    torch.testing.assert_close(cached[:, 0], full[:, -1], atol=1e-5, rtol=1e-4)
    model.save_pretrained(tmp_path / "p")
    torch.testing.assert_close(ReaRec.from_pretrained(tmp_path / "p").eval().encode_users(seq), model.encode_users(seq))


def test_hllm_id_vectors_are_added_to_the_text_tower_and_learn():
    model = _tiny("hllm-frozen-id-vectors").train()
    text_only = model.adapter(model.item_vectors)
    torch.testing.assert_close(model.item_embeddings(), text_only + model.id_emb.weight)
    assert torch.all(model.id_emb.weight[0] == 0) and model.id_emb.weight[1:].abs().max() <= 0.04
    before = model.id_emb.weight.detach().clone()
    adam_steps(model, _batch(), 1)
    assert not torch.equal(before, model.id_emb.weight)
