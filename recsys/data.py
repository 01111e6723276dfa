"""Per-user item sequences, the leave-one-out split and left-padded training / evaluation batches.

Item ids are mapped to contiguous indices ``1..n_items`` (0 is padding); the mapping is saved with
every model (``rankwise.json``) so predictions can be translated back to the dataset's ids.

Split, protocol ``"ours"`` (leave-one-out, HSTU/HLLM-style): for a user sequence ``s_0 … s_{n-1}`` the
last item is the test target (history ``s_0 … s_{n-2}``), the second-last the validation target
(history ``s_0 … s_{n-3}``), and training sees ``s_0 … s_{n-3}`` only; the catalog is every item with
an interaction. Training predicts the next item at every position of windows of at most ``max_len``
inputs cut from the end of the training sequence.

Protocol ``"hstu"`` (the HSTU authors' ``generative-recommenders`` research code): training sees
``s_0 … s_{n-2}`` (``ignore_last_n=1``: no validation split is held out), the test target is
``s_{n-1}`` with history ``s_0 … s_{n-2}``, the catalog is every item of the dataset's item table
(ML-1M: 3,883 movies, 177 of them never rated, ranked and sampled as negatives like the others), and
evaluation excludes only the last ``max_len`` history items (the model's input window), not the whole
history (:func:`rankwise.recsys.evaluate.evaluate_full_ranking`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
import torch

from rankwise.eval.datasets.interactions import Interactions, item_text

PROTOCOLS = ("ours", "hstu")
"""Split and catalog conventions of :class:`SequenceData` (module docstring)."""

__all__ = ["PROTOCOLS", "SequenceData", "left_pad", "train_windows", "iter_train_batches", "iter_eval_batches"]


@dataclass
class SequenceData:
    """Chronological item-index sequences of every user, with the id mapping and item texts.

    Attributes:
        name: dataset name.
        user_ids: dataset user ids, one per sequence.
        sequences: ``sequences[u]`` is an int64 array of item indices in ``1..n_items``.
        item_ids: ``item_ids[i - 1]`` is the dataset id of item index ``i``.
        item_texts: ``item_texts[i - 1]`` is the text template of item index ``i`` ("" when no text).
        item_titles: display title of each item index (falls back to the id).
        protocol: ``"ours"`` or ``"hstu"``: which split :meth:`history` / :meth:`targets` give and how
            much history evaluation excludes (module docstring).
    """

    name: str
    user_ids: list[str]
    sequences: list[np.ndarray]
    item_ids: list[str]
    item_texts: list[str] = field(repr=False)
    item_titles: list[str] = field(repr=False)
    protocol: Literal["ours", "hstu"] = "ours"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"SequenceData: protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_interactions(
        cls, data: Interactions, item_ids: list[str] | None = None, protocol: Literal["ours", "hstu"] = "ours"
    ) -> SequenceData:
        """Build sequences from :func:`eval.datasets.interactions.load_interactions` output.

        Args:
            data: the loaded dataset.
            item_ids: a saved id mapping (from a model directory) to reuse; by default items are
                indexed in order of first appearance in the sorted log, then (protocol ``"hstu"``)
                the item-table items that have no interaction. Items unknown to a given mapping
                raise ``ValueError`` naming one of them.
            protocol: ``"ours"`` or ``"hstu"`` (module docstring).
        """
        inter = data.interactions
        if item_ids is None:
            item_ids = inter["item_id"].unique(maintain_order=True).to_list()
            if protocol == "hstu":
                seen = set(item_ids)
                item_ids += [i for i in data.items["item_id"].to_list() if i not in seen]
        index = {iid: i + 1 for i, iid in enumerate(item_ids)}
        unknown = [i for i in inter["item_id"].unique().to_list() if i not in index]
        if unknown:
            raise ValueError(f"{data.source}: {len(unknown)} item ids are not in the model's item mapping, e.g. {unknown[0]}")
        mapping = pl.DataFrame({"item_id": item_ids, "idx": np.arange(1, len(item_ids) + 1)})
        grouped = (
            inter.join(mapping, on="item_id", how="left")
            .group_by("user_id", maintain_order=True)
            .agg(pl.col("idx"))
        )
        sequences = [np.asarray(s, dtype=np.int64) for s in grouped["idx"].to_list()]
        items = data.items
        by_id = {r["item_id"]: r for r in items.iter_rows(named=True)} if items.columns != ["item_id"] else {}
        fields = data.text_fields()
        texts = [item_text(by_id.get(i, {}), fields) for i in item_ids]
        named = data.item_titles()
        titles = [named.get(i, i) for i in item_ids]
        return cls(data.name, grouped["user_id"].to_list(), sequences, list(item_ids), texts, titles, protocol)

    def _check_split(self, split: str) -> None:
        if split == "valid" and self.protocol == "hstu":
            raise ValueError(f"{self.name}: protocol hstu holds out no validation split (training sees every item but "
                             "the last, as in the HSTU authors' code); train a fixed number of epochs or use protocol ours")

    def history(self, split: Literal["train", "valid", "test"]) -> list[np.ndarray]:
        """Input sequences for ``split``: training prefix, validation history or test history."""
        self._check_split(split)
        cut = {"train": 1 if self.protocol == "hstu" else 2, "valid": 2, "test": 1}[split]
        return [s[:-cut] for s in self.sequences]

    def targets(self, split: Literal["valid", "test"]) -> np.ndarray:
        """The held-out item index of every user: second-last (valid) or last (test)."""
        self._check_split(split)
        pos = -2 if split == "valid" else -1
        return np.asarray([s[pos] for s in self.sequences], dtype=np.int64)

    def excluded_window(self, max_len: int) -> int | None:
        """How many of the most recent history items evaluation excludes: all (``None``, protocol
        ``"ours"``) or the model's input window of ``max_len`` (protocol ``"hstu"``)."""
        return max_len if self.protocol == "hstu" else None


def left_pad(seqs: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Keep the last ``max_len`` items of each sequence and left-pad with 0.

    Shapes:
        returns: ``(B, L)`` int64 with ``L = min(max_len, longest)``; the most recent item is at ``L - 1``.
    """
    length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[row, length - len(s):] = s
    return torch.from_numpy(out)


def train_windows(
    train_seqs: list[np.ndarray], max_len: int, windows: Literal["last", "all"] = "all"
) -> list[np.ndarray]:
    """Cut training sequences into windows of at most ``max_len + 1`` items (inputs + shifted targets).

    ``"last"`` keeps only the most recent window per user (SASRec / HSTU); ``"all"`` also cuts the
    older history into non-overlapping windows, so every training position is predicted once per epoch.
    Sequences shorter than 2 items give no window.
    """
    out: list[np.ndarray] = []
    for s in train_seqs:
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append(s[start:end])
            if windows == "last":
                break
            end = start + 1  # the next window's last target is this window's first input
            if start == 0:
                break
    return out


def iter_train_batches(
    windows: list[np.ndarray], batch_size: int, max_len: int, rng: np.random.Generator, bucket: int = 64
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled next-item batches: ``item_seq`` (B, L) inputs and ``target`` (B, L), 0 = no target.

    Windows are shuffled, then sorted by length inside groups of ``bucket`` batches, and the batches
    are shuffled again: batches hold windows of similar length, so little compute goes to padding
    (short-sequence datasets such as Amazon or Yelp train several times faster).
    """
    order = rng.permutation(len(windows))
    group = batch_size * max(1, bucket)
    batches = []
    for g in range(0, len(order), group):
        chunk = sorted(order[g:g + group], key=lambda i: len(windows[i]))
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    for b in rng.permutation(len(batches)):
        padded = left_pad([windows[i] for i in batches[b]], max_len + 1)  # (B, L + 1)
        item_seq = padded[:, :-1]
        # A padded input predicts nothing (the first item of a window has no history there).
        yield {"item_seq": item_seq, "target": padded[:, 1:] * (item_seq > 0)}


def iter_eval_batches(
    histories: list[np.ndarray], targets: np.ndarray | None, batch_size: int, max_len: int,
    excluded_window: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Evaluation batches in user order: ``item_seq`` (B, L) left-padded history (last ``max_len``),
    ``history`` (B, H) the history items to exclude (0-padded: all of them, or the last
    ``excluded_window``), and ``target`` (B,) when given."""
    for start in range(0, len(histories), batch_size):
        chunk = histories[start:start + batch_size]
        batch = {"item_seq": left_pad(chunk, max_len), "history": left_pad(chunk, excluded_window or 10**9)}
        if targets is not None:
            batch["target"] = torch.from_numpy(np.asarray(targets[start:start + batch_size]))
        yield batch
