"""HSTU: shapes, causality, padding, the pointwise attention formula, training, save/load and ONNX export."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankwise.recsys import HSTU, HSTUConfig, load_recommender
from rankwise.recsys._seq import causal_mask
from tests._train import adam_steps

N_ITEMS, D, L = 30, 16, 8


def _tiny(**overrides) -> HSTU:
    torch.manual_seed(0)
    cfg = {"n_items": N_ITEMS, "hidden": D, "max_len": L, "n_heads": 2, "dropout": 0.0, "n_negatives": 8, **overrides}
    return HSTU(HSTUConfig(**cfg))


def _seq() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, N_ITEMS + 1, (4, L), generator=g)
    seq[0, :3] = 0  # left padding
    seq[1, :6] = 0
    return seq


def test_hstu_config_defaults_are_the_authors_ml1m_run():
    cfg = HSTUConfig(n_items=3706)
    assert (cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.head_dims, cfg.dropout, cfg.max_len) == (50, 2, 1, (50, 50), 0.2, 200)
    assert (cfg.loss, cfg.n_negatives, cfg.similarity, cfg.temperature) == ("sampled", 128, "cosine", 0.05)
    assert HSTUConfig(n_items=5, hidden=12, n_heads=3).head_dims == (4, 4)
    assert HSTUConfig(n_items=5, hidden=10, n_heads=3, dqk=4, dv=6).head_dims == (4, 6)
    with pytest.raises(ValueError, match="HSTUConfig: hidden=10 is not divisible by n_heads=3"):
        HSTUConfig(n_items=5, hidden=10, n_heads=3)
    with pytest.raises(ValueError, match="HSTUConfig: dv must be"):
        HSTUConfig(n_items=5, dv=0)


def test_hstu_surface_shapes():
    model = _tiny().eval()
    seq = _seq()
    assert model.encode_sequence(seq).shape == (4, L, D)
    assert model.encode_users(seq).shape == (4, D)
    assert model.item_embeddings().shape == (N_ITEMS + 1, D)
    scores = model.full_sort_predict({"item_seq": seq})
    assert scores.shape == (4, N_ITEMS) and torch.isfinite(scores).all()
    assert model.encode_users(seq[:, -3:]).shape == (4, D)  # shorter than max_len


def test_hstu_later_items_do_not_change_earlier_positions():
    model = _tiny(n_layers=3).eval()
    seq = _seq()
    changed = seq.clone()
    changed[:, 5] = changed[:, 5] % N_ITEMS + 1
    before, after = model.encode_sequence(seq), model.encode_sequence(changed)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=0, rtol=0)
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_hstu_left_padding_does_not_change_the_user():
    model = _tiny().eval()
    short, padded = torch.tensor([[3, 9, 4]]), torch.tensor([[0, 0, 0, 0, 3, 9, 4]])
    torch.testing.assert_close(model.encode_users(short), model.encode_users(padded), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.encode_sequence(short), model.encode_sequence(padded)[:, 4:], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(model.encode_users(short), model.encode_users(torch.tensor([[9, 3, 4]])))


def test_hstu_layer_is_the_pointwise_formula_by_hand():
    """One layer against the formula written out: U, V, Q, K = split(SiLU(LN(X) W₁)); A = SiLU(QKᵀ + rab)·mask / n;
    Y = X + f₂(LN(AV) ⊙ U) — no softmax, no 1/√dqk, n = max_len (not the batch's length)."""
    h, dqk, dv = 2, 3, 5
    model = _tiny(n_layers=1, dqk=dqk, dv=dv).eval()
    layer = model.layers[0]
    with torch.no_grad():
        layer.rab.normal_(std=0.5)  # a visible bias
    seq = torch.tensor([[0, 0, 4, 7, 1], [2, 8, 3, 5, 6]])
    n = seq.shape[1]
    x = model.embed(seq)  # (B, n, D)
    z = F.silu(F.layer_norm(x, (D,), eps=1e-6) @ layer.f1.weight.T)
    u, v, q, k = z.split([h * dv, h * dv, h * dqk, h * dqk], dim=-1)
    t = torch.arange(n)
    rab = layer.rab[t[:, None] - t[None, :]].tril()  # rab[t, s] = w[t − s]
    keep = (t[None, :] <= t[:, None])[None] & (seq > 0)[:, None, :]  # (B, n, n): causal, items only
    heads = []
    for i in range(h):
        qi, ki, vi = q[..., i * dqk:(i + 1) * dqk], k[..., i * dqk:(i + 1) * dqk], v[..., i * dv:(i + 1) * dv]
        a = F.silu(qi @ ki.transpose(1, 2) + rab) / L * keep
        heads.append(a @ vi)
    want = x + layer.f2(F.layer_norm(torch.cat(heads, -1), (h * dv,), eps=1e-6) * u)
    got = model.encode_sequence(seq)
    real = seq > 0
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-4)
    a = layer.attention(x, causal_mask(seq), model._distance(seq))  # (B, h, n, n)
    assert (a.masked_select(~keep[:, None] & real[:, None, :, None]) == 0).all()  # future items and padding: 0
    assert (a < 0).any()  # SiLU weights can be negative: no softmax
    rows = a[1].sum(-1)  # (h, n): unnormalised rows
    assert not torch.allclose(rows, torch.ones_like(rows))


def test_hstu_loss_drops_in_30_adam_steps_and_every_part_learns():
    """A synthetic catalog where item i is always followed by item i + 1: the next-item loss must fall."""
    model = _tiny(loss="sampled", n_negatives=8).train()
    starts = torch.randint(1, N_ITEMS - L, (16,), generator=torch.Generator().manual_seed(2))
    items = starts[:, None] + torch.arange(L + 1)  # (16, L + 1)
    batch = {"item_seq": items[:, :-1].clone(), "target": items[:, 1:].clone()}
    batch["item_seq"][:4, :3] = 0  # some left padding, no targets there
    batch["target"][:4, :3] = 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    first = model.calculate_loss(batch).item()
    adam_steps(model, batch, 30)
    torch.manual_seed(0)
    last = model.calculate_loss(batch).item()
    assert np.isfinite(last) and last < 0.5 * first
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"item_emb.weight", "pos_emb.weight", "layers.0.f1.weight", "layers.0.f2.weight", "layers.0.rab"} <= moved


def test_hstu_save_and_load_give_identical_scores(tmp_path):
    model = _tiny(dqk=3, dv=5).eval()
    model.item_ids = [f"i{i}" for i in range(1, N_ITEMS + 1)]
    model.save_pretrained(tmp_path / "m", dataset="toy")
    loaded = load_recommender(tmp_path / "m")
    assert type(loaded) is HSTU and loaded.config == model.config and loaded.meta["dataset"] == "toy"
    batch = {"item_seq": _seq()}
    assert torch.equal(loaded.full_sort_predict(batch), model.full_sort_predict(batch))


def test_hstu_user_tower_exports_with_dynamic_batch_and_length_and_serves_like_pytorch(tmp_path):
    from rankwise.serving.api import Recommender
    from rankwise.serving.export import export_model
    from rankwise.serving.runtime import OnnxSession

    model = _tiny(max_len=20, n_layers=2).eval()
    model.item_ids = [f"i{i}" for i in range(1, N_ITEMS + 1)]
    model.save_pretrained(tmp_path / "m")
    result = export_model(tmp_path / "m", tmp_path / "onnx")
    assert result.fp32_parity_max_abs_diff <= 1e-4
    session = OnnxSession(tmp_path / "onnx" / "model.onnx", device="cpu")
    for seq in (np.array([[0, 0, 0, 3, 9, 4, 1], [5, 6, 7, 8, 9, 10, 11]]),  # unseen batch and lengths
                np.array([[1, 2, 3]] * 3), np.random.default_rng(0).integers(0, N_ITEMS + 1, (5, 20))):
        with torch.inference_mode():
            want = model.encode_users(torch.from_numpy(seq)).numpy()
        np.testing.assert_allclose(session.run({"item_seq": seq.astype(np.int64)}), want, atol=1e-4)
    history = ["i2", "i9", "i4", "i30", "i17", "i9"]
    a = Recommender.load(tmp_path / "m", device="cpu").recommend(history, k=8)
    b = Recommender.load(tmp_path / "onnx", device="cpu").recommend(history, k=8)
    assert [h.item_id for h in a] == [h.item_id for h in b] and len(a) == 8
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)


def test_rearec_reasoning_on_hstu_equals_its_steps_appended_to_the_sequence():
    """The cached reasoning pass (keys/values of the sequence reused) against the plain HSTU forward over
    the sequence with each step's input appended at the next position."""
    from rankwise.recsys import ReaRecHSTU, ReaRecHSTUConfig
    from rankwise.recsys._seq import causal_mask

    torch.manual_seed(0)
    model = ReaRecHSTU(ReaRecHSTUConfig(n_items=30, hidden=16, n_heads=2, max_len=12, dropout=0.0, reasoning_steps=3)).eval()
    seq = torch.tensor([[0, 0, 5, 9, 3, 7], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        hidden, cache, mask = model.encode_sequence_cached(seq)
        states = model.reason(hidden[:, -1:], cache, mask[:, :, -1:])
        inputs, ids, r = model.embed(seq), seq, hidden[:, -1:]
        for k in range(3):
            inputs = torch.cat([inputs, model.reason_ln(r + model.rpe.weight[k])], 1)  # (B, L + k + 1, D)
            ids = torch.cat([ids, torch.ones_like(seq[:, :1])], 1)  # a reasoning token is a valid key
            h = inputs
            for layer in model.layers:
                h = layer(h, causal_mask(ids), model._distance(ids))
            r = h[:, -1:]
            torch.testing.assert_close(states[k + 1], r, atol=1e-5, rtol=1e-4)
        users = model.encode_users(seq)
    torch.testing.assert_close(users, torch.stack(states).mean(0)[:, 0])  # ERL: the mean of r_0..r_K
