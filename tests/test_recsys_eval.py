"""Leave-one-out split, training windows, history exclusion and full-ranking metrics on hand-made cases."""

import math

import numpy as np
import pytest
import torch

from rankwise.eval.datasets.interactions import load_interactions
from rankwise.recsys.data import SequenceData, iter_eval_batches, iter_train_batches, left_pad, train_windows
from rankwise.recsys.evaluate import evaluate_full_ranking, exclude_history, rank_metrics, target_ranks


@pytest.fixture(scope="module")
def ml100k() -> SequenceData:
    return SequenceData.from_interactions(load_interactions("ml-100k"))


def test_leave_one_out_split_holds_out_last_two_items(ml100k):
    seq = ml100k.sequences[0]
    assert ml100k.targets("test")[0] == seq[-1]
    assert ml100k.targets("valid")[0] == seq[-2]
    assert np.array_equal(ml100k.history("test")[0], seq[:-1])
    assert np.array_equal(ml100k.history("valid")[0], seq[:-2])
    assert np.array_equal(ml100k.history("train")[0], seq[:-2])
    # Training never sees a validation or test target.
    for train, s in zip(ml100k.history("train"), ml100k.sequences):
        assert len(train) == len(s) - 2
    assert sum(len(s) for s in ml100k.sequences) == 100_000


def test_item_mapping_is_contiguous_and_titled(ml100k):
    all_items = np.concatenate(ml100k.sequences)
    assert all_items.min() == 1 and all_items.max() == ml100k.n_items == 1682
    i = ml100k.item_ids.index("1")
    assert ml100k.item_titles[i] == "Toy Story" and ml100k.item_texts[i].startswith("title: Toy Story")


def test_train_windows_predict_every_position_once():
    seqs = [np.arange(1, 12)]  # 11 items → 10 next-item targets
    windows = train_windows(seqs, max_len=4, windows="all")
    targets = np.concatenate([w[1:] for w in windows])
    assert sorted(targets.tolist()) == list(range(2, 12))
    assert all(len(w) <= 5 for w in windows)
    assert [w.tolist() for w in train_windows(seqs, 4, "last")] == [[7, 8, 9, 10, 11]]


def test_batches_are_left_padded_and_pads_have_no_target():
    batch = next(iter_train_batches([np.array([5, 6, 7]), np.array([1, 2, 3, 4])], 4, 5, np.random.default_rng(0)))
    rows = sorted(zip(batch["item_seq"].tolist(), batch["target"].tolist()))
    assert rows == [([0, 5, 6], [0, 6, 7]), ([1, 2, 3], [2, 3, 4])]
    assert left_pad([np.array([1, 2, 3])], 2).tolist() == [[2, 3]]


def test_history_exclusion_removes_seen_items_only():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])  # items 1..5
    history = torch.tensor([[0, 1, 2]])  # padded history of items 1 and 2
    out = exclude_history(scores, history)
    assert torch.isneginf(out[0, :2]).all() and out[0, 2:].tolist() == [3.0, 2.0, 1.0]
    assert target_ranks(out, torch.tensor([3])).item() == 0  # best unseen item
    assert target_ranks(out, torch.tensor([1])).item() == 5  # a seen target can never be a hit


def test_eval_batches_carry_the_full_history_beyond_max_len():
    batch = next(iter_eval_batches([np.arange(1, 9)], np.array([9]), 8, max_len=3))
    assert batch["item_seq"].tolist() == [[6, 7, 8]] and batch["history"].shape[1] == 8


def test_ties_count_against_the_target():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert target_ranks(scores, torch.tensor([2])).item() == 2  # a constant model gets no free hits


def test_metrics_on_hand_made_ranks():
    m = rank_metrics(np.array([0, 1, 9, 10, 60]), ks=(10, 50))
    assert m["hr@10"] == pytest.approx(3 / 5) and m["recall@10"] == m["hr@10"]
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m["hr@50"] == pytest.approx(4 / 5)
    assert m["ndcg@50"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11) + 1 / math.log2(12)) / 5)


class _Oracle(torch.nn.Module):
    """Scores the held-out item highest, and every history item even higher (to test exclusion)."""

    def __init__(self, data: SequenceData) -> None:
        super().__init__()
        self.config = type("C", (), {"max_len": 10**6})()
        self.n, self.target = data.n_items, {tuple(h.tolist()): t for h, t in zip(data.history("test"), data.targets("test"))}

    def sync_item_tower(self) -> None:
        pass

    def full_sort_predict(self, batch):
        scores = torch.zeros(len(batch["item_seq"]), self.n)
        for row, hist in enumerate(batch["history"].tolist()):
            hist = [h for h in hist if h]
            scores[row, torch.tensor(hist) - 1] = 10.0
            scores[row, self.target[tuple(hist)] - 1] = 5.0
        return scores


def test_full_ranking_excludes_history_end_to_end(ml100k):
    metrics = evaluate_full_ranking(_Oracle(ml100k), ml100k, "test")
    assert metrics["users"] == 943
    assert metrics["hr@10"] == 1.0 and metrics["ndcg@10"] == 1.0


def test_nan_target_score_is_never_a_hit():
    # regression: a NaN target score compared False with every item, giving rank -1 and NDCG = inf
    import math

    import torch

    from rankwise.recsys.evaluate import rank_metrics, target_ranks

    scores = torch.tensor([[0.1, float("nan"), 0.3], [0.5, 0.2, 0.1]])
    ranks = target_ranks(scores, torch.tensor([2, 1]))
    assert ranks.tolist() == [3, 0]
    metrics = rank_metrics(ranks.numpy(), (2,))
    assert metrics["hr@2"] == 0.5 and math.isfinite(metrics["ndcg@2"])


@pytest.mark.parametrize("multi", [False, True])
def test_chunked_ranks_equal_dense_ranks(multi):
    import torch

    from rankwise.recsys._seq import score_users_items
    from rankwise.recsys.evaluate import chunked_target_ranks, exclude_history, target_ranks

    torch.manual_seed(0)
    items = torch.randn(40, 8)
    items[7] = items[3]  # a tie with another item
    users = torch.randn(6, 3, 8) if multi else torch.randn(6, 8)
    target = torch.tensor([4, 8, 1, 40, 17, 23])
    history = torch.tensor([[1, 2, 0], [5, 0, 0], [9, 10, 11], [40, 0, 0], [0, 0, 0], [22, 24, 3]])  # user 3's target is in history
    dense = target_ranks(exclude_history(score_users_items(users, items, "cosine"), history), target)
    for chunk in (1, 7, 40, 64):
        assert torch.equal(chunked_target_ranks(users, items, "cosine", target, history, chunk), dense)
    assert dense[3] == 40  # excluded target: never a hit


def test_evaluation_in_item_chunks_matches_dense(ml100k):
    import torch

    from rankwise.recsys import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=ml100k.n_items, hidden=16, max_len=20))
    dense = evaluate_full_ranking(model, ml100k, "test")
    chunked = evaluate_full_ranking(model, ml100k, "test", item_chunk=97)
    assert chunked == dense


class _ByIndex(torch.nn.Module):
    """Scores item j as j (the newest-looking item wins), with a model window of ``max_len``."""

    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__()
        self.config = type("C", (), {"max_len": max_len})()
        self.n = n_items

    def sync_item_tower(self) -> None:
        pass

    def full_sort_predict(self, batch):
        return torch.arange(1, self.n + 1, dtype=torch.float32).repeat(len(batch["item_seq"]), 1)


def _toy(protocol: str) -> SequenceData:
    seqs = [np.array([5, 1, 2, 3, 5]), np.array([1, 2, 3, 5])]
    ids = [str(i) for i in range(1, 6)]
    return SequenceData("toy", ["a", "b"], seqs, ids, [""] * 5, ids, protocol)


def test_hstu_protocol_trains_on_all_but_the_last_item_and_has_no_validation_split():
    data = _toy("hstu")
    assert [h.tolist() for h in data.history("train")] == [[5, 1, 2, 3], [1, 2, 3]]
    assert [h.tolist() for h in data.history("test")] == [[5, 1, 2, 3], [1, 2, 3]]
    assert data.targets("test").tolist() == [5, 5]
    with pytest.raises(ValueError, match="no validation split"):
        data.history("valid")
    assert [h.tolist() for h in _toy("ours").history("train")] == [[5, 1, 2], [1, 2]]
    with pytest.raises(ValueError, match="protocol"):
        _toy("recbole")


def test_hstu_protocol_excludes_only_the_model_window_of_history():
    # user a's target 5 was seen 4 items ago: ours excludes it (never a hit), hstu with a window of 2 ranks it first
    ours = evaluate_full_ranking(_ByIndex(5, max_len=2), _toy("ours"), "test", ks=(1,))
    hstu = evaluate_full_ranking(_ByIndex(5, max_len=2), _toy("hstu"), "test", ks=(1,))
    assert ours["targets_in_history"] == 0.5 and hstu["targets_in_history"] == 0.0
    assert ours["hr@1"] == 0.5  # a: its target is excluded, a miss; b: 5 is unseen and scores highest
    assert hstu["hr@1"] == 1.0  # a's 5 lies outside the window of 2, so it is ranked (first)
    batch = next(iter_eval_batches(_toy("hstu").history("test"), None, 2, max_len=3, excluded_window=2))
    assert batch["history"].tolist() == [[2, 3], [2, 3]] and batch["item_seq"].tolist() == [[1, 2, 3], [1, 2, 3]]


def test_hstu_protocol_ranks_the_whole_item_table():
    data = load_interactions("ml-1m")
    ours, hstu = SequenceData.from_interactions(data), SequenceData.from_interactions(data, protocol="hstu")
    assert ours.n_items == 3706 and hstu.n_items == 3883
    assert hstu.item_ids[:3706] == ours.item_ids  # rated items keep their indices; the 177 unrated follow
    assert int(np.concatenate(hstu.sequences).max()) <= 3706
