"""Full-ranking evaluation (the HSTU/HLLM protocol): every item is scored, the user's history is excluded.

PROTOCOL names the protocol in every table and result file. HR@K equals Recall@K here because each
user has exactly one held-out item; both keys are reported so tables line up with papers using either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rankwise.recsys.data import SequenceData, iter_eval_batches

__all__ = ["PROTOCOL", "PROTOCOL_HSTU", "protocol_text", "KS", "target_ranks", "chunked_target_ranks", "exclude_history", "rank_metrics", "evaluate_full_ranking"]

PROTOCOL = ("leave-one-out (last item test, second-last validation), full ranking over every item with an interaction, "
            "the user's whole history excluded (HSTU/HLLM-style; HSTU's own code excludes only the last <= 200 history "
            "items and ranks every catalogue item, e.g. 3,883 ML-1M movies where we rank the 3,706 with interactions)")
PROTOCOL_HSTU = ("the HSTU authors' protocol (generative-recommenders research code): training on every item but the last, "
                 "test = last item, full ranking over every catalogue item (ML-1M: 3,883 movies), only the last max_len "
                 "(model window) history items excluded, no validation split")
KS = (10, 50, 200)


def protocol_text(protocol: str) -> str:
    """The table caption of a :data:`rankwise.recsys.data.PROTOCOLS` name."""
    return PROTOCOL_HSTU if protocol == "hstu" else PROTOCOL


def exclude_history(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Set the scores of items the user has already interacted with to −inf.

    Shapes:
        scores: ``(B, n_items)`` (column ``j`` = item index ``j + 1``); history: ``(B, H)`` item
        indices, 0 = padding; returns a new ``(B, n_items)`` tensor.
    """
    padded = torch.cat([torch.zeros_like(scores[:, :1]), scores], dim=1)  # (B, 1 + n_items)
    padded = padded.scatter(1, history, float("-inf"))
    return padded[:, 1:]


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items; ties count against the target (pessimistic).

    A target whose score is −inf (it was in the history) or NaN gets rank ``n_items`` (never a hit);
    NaN scores of other items never rank above the target.

    Shapes:
        scores: ``(B, n_items)``; target: ``(B,)`` item indices in ``1..n_items``; returns ``(B,)`` int64.
    """
    t = scores.gather(1, (target - 1)[:, None])  # (B, 1)
    rank = (scores >= t).sum(1) - 1  # (B,)
    miss = torch.isneginf(t[:, 0]) | torch.isnan(t[:, 0])
    return torch.where(miss, torch.full_like(rank, scores.shape[1]), rank)


def rank_metrics(ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """HR@K, Recall@K and NDCG@K from 0-based target ranks (one relevant item per user).

    Formula:
        HR@K = Recall@K = mean[rank < K]; NDCG@K = mean[rank < K] / log2(rank + 2).

    Example:
        >>> rank_metrics(np.array([0, 1, 20]), ks=(10,))["ndcg@10"]  # (1 + 1/log2(3) + 0) / 3
        0.5436432511904858
    """
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit / np.log2(r + 2)).mean())
        out[f"recall@{k}"] = float(hit.mean())
    return out


DENSE_SCORES = 64 * 1024 * 1024
"""Above this many scores per user batch (256 MB of float32), evaluation scores the catalog in chunks."""


def chunked_target_ranks(
    users: torch.Tensor, items: torch.Tensor, similarity: str, target: torch.Tensor, history: torch.Tensor, chunk: int
) -> torch.Tensor:
    """:func:`target_ranks` of ``exclude_history(scores)`` without the ``(B, n_items)`` score matrix.

    Two passes over ``chunk``-item slices of the catalog: the first reads each target's score from
    the slice that holds it (the same arithmetic as the dense path), the second counts the items
    scored at least as high (history excluded). Ties count against the target, as in the dense path.

    Shapes: users ``(B, D)`` or ``(B, M, D)``, items ``(n_items, D)``, target ``(B,)``, history
    ``(B, H)`` (0 = padding); returns ``(B,)`` int64.
    """
    from rankwise.recsys._seq import score_users_items

    n = items.shape[0]
    rows = torch.arange(target.shape[0], device=target.device)

    def scored(start: int) -> torch.Tensor:  # (B, c) with the history of this slice at -inf
        s = score_users_items(users, items[start : start + chunk], similarity)
        local = history - 1 - start  # (B, H)
        inside = (history > 0) & (local >= 0) & (local < s.shape[1])
        r, c = rows[:, None].expand_as(local)[inside], local[inside]
        s[r, c] = float("-inf")
        return s

    t = torch.full((target.shape[0],), float("nan"), device=users.device)
    for start in range(0, n, chunk):
        s = scored(start)
        local = target - 1 - start
        inside = (local >= 0) & (local < s.shape[1])
        t[inside] = s[rows[inside], local[inside]]
    count = torch.zeros(target.shape[0], dtype=torch.int64, device=users.device)
    for start in range(0, n, chunk):
        count += (scored(start) >= t[:, None]).sum(1)
    miss = torch.isneginf(t) | torch.isnan(t)
    return torch.where(miss, torch.full_like(count, n), count - 1)


@torch.no_grad()
def evaluate_full_ranking(
    model: torch.nn.Module,
    data: SequenceData,
    split: str = "test",
    batch_size: int = 256,
    ks: Sequence[int] = KS,
    item_chunk: int | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` (any :class:`recsys._seq.SequentialRecommender`) on the valid or test split.

    Every user is scored against all items with ``full_sort_predict``; items in the user's history
    are excluded before ranking: all earlier interactions (``data.protocol == "ours"``) or only the
    last ``max_len``, the model's input window (``"hstu"``, as the HSTU authors' code does).

    ``item_chunk``: score the catalog ``item_chunk`` items at a time (:func:`chunked_target_ranks`),
    so memory is ``batch_size x item_chunk`` scores, not ``batch_size x n_items``; ``None`` chunks
    only when a dense batch would exceed :data:`DENSE_SCORES` scores. The ranks are the same.

    Returns:
        ``{"hr@10", "ndcg@10", "recall@10", ..., "users", "targets_in_history"}``: the last is the share of
        users whose held-out item already is in their excluded history, so it can never be hit
        (HR@K is at most ``1 - targets_in_history``; 6.66 % of Yelp's test users, for example).
    """
    was_training = model.training
    model.eval()
    model.sync_item_tower()
    histories, targets = data.history(split), data.targets(split)
    ranks = []
    device = next(model.parameters(), torch.empty(0)).device  # CPU for parameter-free scorers
    n_items = data.n_items
    chunk = item_chunk or (None if batch_size * n_items <= DENSE_SCORES else max(1, DENSE_SCORES // batch_size))
    window = data.excluded_window(model.config.max_len)
    for batch in iter_eval_batches(histories, targets, batch_size, model.config.max_len, window):
        batch = {k: v.to(device) for k, v in batch.items()}
        if chunk is None:
            scores = exclude_history(model.full_sort_predict(batch), batch["history"])
            ranks.append(target_ranks(scores, batch["target"]).cpu())
        else:
            users = model.encode_users(batch["item_seq"])
            ranks.append(chunked_target_ranks(users, model.item_embeddings()[1:], model.config.similarity,
                                              batch["target"], batch["history"], chunk).cpu())
    model.train(was_training)
    out = rank_metrics(torch.cat(ranks).numpy(), ks)
    out["users"] = len(histories)
    excluded = [np.asarray(h)[-window:] if window else np.asarray(h) for h in histories]
    out["targets_in_history"] = float(np.mean([int(t) in set(h.tolist()) for h, t in zip(excluded, targets)])) if histories else 0.0
    return out
