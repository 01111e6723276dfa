"""Shared mechanics of the sequential recommenders: causal transformer with a reusable KV cache,
item/position embeddings, softmax losses and the save/load surface.

Every model in ``recsys/`` subclasses :class:`SequentialRecommender` and exposes the same surface:
``calculate_loss(batch)``, ``encode_users(item_seq) -> (B, D)``, ``item_embeddings() -> (n_items + 1, D)``
(row 0 is padding), ``full_sort_predict(batch) -> (B, n_items)`` (column ``j`` is item index ``j + 1``),
``save_pretrained(dir)`` / ``from_pretrained(dir)``. ``encode_users`` and ``item_embeddings`` contain no
data-dependent Python control flow, so both export to ONNX with dynamic batch and sequence axes.

Sequences are left-padded with 0, so the most recent item is always at position ``L - 1`` and the
user vector is ``hidden[:, -1]``; absolute positions count back from the end (``max_len - L … max_len - 1``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from rankwise.core.model_dir import RANKWISE_JSON, ModelDirError, caller_trust_only, read_rankwise_json, write_rankwise_json

__all__ = [
    "causal_mask",
    "index_of",
    "init_id_embeddings",
    "CausalSelfAttention",
    "TransformerBlock",
    "CausalEncoder",
    "score_matrix",
    "NextItemLogits",
    "full_softmax_loss",
    "sampled_softmax_loss",
    "SequentialRecommender",
]

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (B, h, L, dh)


def index_of(item_seq: torch.Tensor) -> torch.Tensor:
    """``0..L-1`` built from tensor ops on ``item_seq`` so an ONNX export keeps L dynamic."""
    return torch.ones_like(item_seq[0]).cumsum(0) - 1  # (L,)


def causal_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask: query ``t`` sees key ``s`` when ``s <= t`` and ``s`` is an item (or ``s == t``).

    The diagonal is always allowed so padded rows never softmax over an empty set.

    Shapes:
        item_seq: ``(B, L)`` int64, 0 = padding. returns: ``(B, 1, L, L)`` bool.
    """
    idx = index_of(item_seq)  # (L,)
    tril = idx[None, :] <= idx[:, None]  # (L, L)
    diagonal = idx[None, :] == idx[:, None]  # (L, L); comparisons, not torch.eye: exports to ONNX
    valid = (item_seq > 0)[:, None, :] | diagonal[None]
    return (tril[None] & valid)[:, None]  # (B, 1, L, L)


def init_id_embeddings(item_emb: nn.Embedding | None, pos_emb: nn.Embedding) -> None:
    """Initialise id tables as the HSTU/SASRec reference does: items N(0, 0.02²), positions N(0, 1/d).

    Both are truncated at ±2σ; row 0 of the item table (padding) is zeroed. The input ``E[s]·√d + P``
    then has per-component std ≈ 0.14 (norm ≈ 1 per token for either part), the scale of the blocks'
    outputs. Larger tables learn far more slowly: Adam moves every weight by ≈ lr per step whatever
    its scale, so a table 7× larger turns 7× more slowly, and input embeddings of norm ≈ 10 drown the
    attention/FFN outputs in the pre-LN residual stream (measured on ML-1M: items std d^-0.5 and
    positions N(0, 1) kept valid HR@10 at ≈ 0.045 for 10 epochs, this init reaches 0.23).

    Shapes:
        item_emb: ``(n_items + 1, D)`` or ``None`` (models without an id table); pos_emb: ``(max_len, D)``.
    """
    d = pos_emb.weight.shape[1]
    with torch.no_grad():
        nn.init.trunc_normal_(pos_emb.weight, std=d**-0.5, a=-2 * d**-0.5, b=2 * d**-0.5)
        if item_emb is not None:
            nn.init.trunc_normal_(item_emb.weight, std=0.02, a=-0.04, b=0.04)
            item_emb.weight[0].zero_()


class CausalSelfAttention(nn.Module):
    """Multi-head attention that returns its keys/values so later tokens can reuse them (KV cache)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"CausalSelfAttention: hidden={hidden} is not divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        shape = (b, length, self.n_heads, d // self.n_heads)
        return tuple(t.view(shape).transpose(1, 2) for t in (q, k, v))  # 3 × (B, h, L, dh)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Self-attention over a sequence. x: (B, L, D), mask: (B, 1, L, L) → (B, L, D), (k, v)."""
        q, k, v = self._split(x)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, h, L, dh)
        return self.out(y.transpose(1, 2).reshape(x.shape)), (k, v)

    def attend_cached(
        self,
        x: torch.Tensor,
        seq_kv: tuple[torch.Tensor, torch.Tensor],
        seq_mask: torch.Tensor,
        extra_kv: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One extra token per query position attends to the cached sequence and to its own extra tokens.

        Query ``t`` of ``x`` sees the sequence keys allowed by ``seq_mask`` row ``t`` plus, for every
        earlier extra step ``j``, the key of step ``j`` at the same position ``t`` (and itself).

        Shapes:
            x: ``(B, Lq, D)``; seq_kv: 2 × ``(B, h, L, dh)``; seq_mask: ``(B, 1, Lq, L)`` bool;
            extra_kv: list of 2 × ``(B, h, Lq, dh)``; returns ``(B, Lq, D)`` and this token's (k, v).
        """
        q, k, v = self._split(x)  # (B, h, Lq, dh)
        scale = 1.0 / math.sqrt(q.shape[-1])
        seq_k, seq_v = seq_kv
        s_seq = (q @ seq_k.transpose(-1, -2)) * scale  # (B, h, Lq, L)
        s_seq = s_seq.masked_fill(~seq_mask, float("-inf"))
        ks = torch.stack([kk for kk, _ in extra_kv] + [k], dim=-2)  # (B, h, Lq, S, dh)
        vs = torch.stack([vv for _, vv in extra_kv] + [v], dim=-2)  # (B, h, Lq, S, dh)
        s_extra = (q.unsqueeze(-2) * ks).sum(-1) * scale  # (B, h, Lq, S)
        attn = torch.cat([s_seq, s_extra], dim=-1).softmax(-1)  # (B, h, Lq, L + S)
        attn = F.dropout(attn, self.dropout, self.training)
        length = seq_k.shape[2]
        y = attn[..., :length] @ seq_v + (attn[..., length:].unsqueeze(-1) * vs).sum(-2)  # (B, h, Lq, dh)
        return self.out(y.transpose(1, 2).reshape(x.shape)), (k, v)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))`` (GELU, 4× width); with
    ``post_ln`` the original Transformer's (and SASRec/RecBole's) ``LN(x + Attn(x))`` then
    ``LN(x + FFN(x))``."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, post_ln: bool = False) -> None:
        super().__init__()
        self.post_ln = post_ln
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, n_heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * hidden, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if self.post_ln:
            a, kv = self.attn(x, mask)
            x = self.ln1(x + self.drop(a))
            return self.ln2(x + self.drop(self.ffn(x))), kv
        a, kv = self.attn(self.ln1(x), mask)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x))), kv

    def forward_cached(
        self,
        x: torch.Tensor,
        seq_kv: tuple[torch.Tensor, torch.Tensor],
        seq_mask: torch.Tensor,
        extra_kv: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The block for extra tokens that reuse a cached sequence (see ``CausalSelfAttention.attend_cached``)."""
        if self.post_ln:
            a, kv = self.attn.attend_cached(x, seq_kv, seq_mask, extra_kv)
            x = self.ln1(x + self.drop(a))
            return self.ln2(x + self.drop(self.ffn(x))), kv
        a, kv = self.attn.attend_cached(self.ln1(x), seq_kv, seq_mask, extra_kv)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x))), kv


class CausalEncoder(nn.Module):
    """Stack of causal :class:`TransformerBlock` over input embeddings, final LayerNorm (pre-LN blocks
    only: post-LN blocks end normalised), KV cache out.

    Shapes:
        x: ``(B, L, D)`` embeddings; mask: ``(B, 1, L, L)``; returns hidden ``(B, L, D)`` and the
        per-layer KV cache.
    """

    def __init__(self, hidden: int, n_layers: int, n_heads: int, dropout: float, post_ln: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(hidden, n_heads, dropout, post_ln) for _ in range(n_layers))
        self.ln = nn.Identity() if post_ln else nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        cache: KVCache = []
        for block in self.blocks:
            x, kv = block(x, mask)
            cache.append(kv)
        return self.ln(x), cache

    def forward_cached(
        self, x: torch.Tensor, cache: KVCache, seq_mask: torch.Tensor, extra_cache: list[KVCache]
    ) -> tuple[torch.Tensor, KVCache]:
        """Run one extra token per query position through every layer, reusing the sequence's cache.

        ``extra_cache[j][layer]`` holds the keys/values of extra step ``j``; returns the new step's
        hidden state ``(B, Lq, D)`` and its own per-layer cache.
        """
        own: KVCache = []
        for layer, block in enumerate(self.blocks):
            x, kv = block.forward_cached(x, cache[layer], seq_mask, [step[layer] for step in extra_cache])
            own.append(kv)
        return self.ln(x), own


def score_matrix(
    users: torch.Tensor, items: torch.Tensor, similarity: Literal["dot", "cosine"], temperature: float
) -> torch.Tensor:
    """Scores ``users @ items.T / temperature``; cosine L2-normalises both sides first.

    Shapes: users ``(N, D)``, items ``(M, D)`` → ``(N, M)``.
    """
    if similarity == "cosine":
        users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
    return (users / temperature) @ items.T


def score_users_items(users: torch.Tensor, items: torch.Tensor, similarity: Literal["dot", "cosine"]) -> torch.Tensor:
    """Scores of ``items`` for each user; a multi-vector user scores each item by its best vector.

    Shapes: users ``(B, D)`` or ``(B, M, D)``, items ``(C, D)`` → ``(B, C)``.
    """
    if users.dim() == 3:
        b, m, d = users.shape
        return score_matrix(users.reshape(b * m, d), items, similarity, 1.0).view(b, m, -1).amax(1)
    return score_matrix(users, items, similarity, 1.0)


def full_softmax_loss(
    hidden: torch.Tensor,
    target: torch.Tensor,
    item_table: torch.Tensor,
    similarity: Literal["dot", "cosine"],
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of the next item over the whole catalog.

    Formula:
        L = −mean_t log softmax(s(h_t, E) / τ)[y_t] over positions with a target (``y_t > 0``).

    Shapes:
        hidden: ``(N, D)`` (already restricted to positions with a target); target: ``(N,)`` in
        ``1..n_items``; item_table: ``(n_items + 1, D)``; returns ``()``.
    """
    logits = score_matrix(hidden, item_table[1:], similarity, temperature)  # (N, n_items)
    return F.cross_entropy(logits, target - 1)


class NextItemLogits:
    """Logits of the next item for positions with a target: over the whole catalog (``n_negatives=0``)
    or over the target plus ``n_negatives`` uniform random negatives shared by every call (so several
    user states of one position, e.g. ReaRec's reasoning steps, are scored against the same items).

    A sampled negative equal to the target gets logit ``MASKED`` (finite, so ``p · log p`` stays 0).

    Sampled logits of a small catalog (``N · n_items ≤ FULL_MATRIX_MAX``, e.g. ML-1M's 3,706 items) are
    read from the full score matrix: one ``(N, D) @ (D, n_items)`` product and a column gather, ≈ 5×
    faster on CPU than gathering ``(N, 1 + K, D)`` item rows, whose backward scatters N·(1 + K) rows
    into the table. Both give the same loss.

    Shapes:
        target: ``(N,)`` in ``1..n_items``; item_table: ``(n_items + 1, D)``; ``logits(h, τ)``: h
        ``(N, D)`` → ``(N, C)`` with ``C = n_items`` or ``1 + n_negatives``; ``labels``: ``(N,)``.
    """

    MASKED = -1e4
    FULL_MATRIX_MAX = 150_000_000

    def __init__(
        self, target: torch.Tensor, item_table: torch.Tensor, n_negatives: int, similarity: Literal["dot", "cosine"]
    ) -> None:
        self.similarity = similarity
        self.columns: torch.Tensor | None = None  # (N, 1 + K) catalog columns of the sampled items
        if n_negatives <= 0:
            self.items, self.clash = item_table[1:], None  # (n_items, D)
            self.labels = target - 1
            return
        n_items = item_table.shape[0] - 1
        negatives = torch.randint(1, n_items + 1, (target.shape[0], n_negatives), device=target.device)  # (N, K)
        sampled = torch.cat([target[:, None], negatives], dim=1)  # (N, 1 + K)
        self.clash = torch.cat([torch.zeros_like(target[:, None], dtype=torch.bool), negatives == target[:, None]], 1)
        self.labels = torch.zeros_like(target)
        if target.shape[0] * n_items <= self.FULL_MATRIX_MAX:
            self.items, self.columns = item_table[1:], sampled - 1  # (n_items, D)
            return
        self.items = item_table[sampled]  # (N, 1 + K, D)
        if similarity == "cosine":
            self.items = F.normalize(self.items, dim=-1)

    def logits(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.clash is None:
            return score_matrix(hidden, self.items, self.similarity, temperature)
        if self.columns is not None:
            out = score_matrix(hidden, self.items, self.similarity, temperature).gather(1, self.columns)
        else:
            h = F.normalize(hidden, dim=-1) if self.similarity == "cosine" else hidden
            out = (self.items @ h.unsqueeze(-1)).squeeze(-1) / temperature  # (N, 1 + K)
        return out.masked_fill(self.clash, self.MASKED)

    def loss(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """Cross-entropy of the true next item. Shapes: hidden ``(N, D)`` → ``()``."""
        return F.cross_entropy(self.logits(hidden, temperature), self.labels)


def sampled_softmax_loss(
    hidden: torch.Tensor,
    target: torch.Tensor,
    item_table: torch.Tensor,
    n_negatives: int,
    similarity: Literal["dot", "cosine"],
    temperature: float,
) -> torch.Tensor:
    """Sampled softmax with uniform random negatives per position (the HSTU repo's SASRec loss).

    Formula:
        L = −mean_t log( e^{s(h_t, e_{y_t})/τ} / (e^{s(h_t, e_{y_t})/τ} + Σ_{j ∈ N_t, j ≠ y_t} e^{s(h_t, e_j)/τ}) )

    Shapes:
        hidden: ``(N, D)``; target: ``(N,)``; item_table: ``(n_items + 1, D)``; returns ``()``.
    """
    return NextItemLogits(target, item_table, n_negatives, similarity).loss(hidden, temperature)


class SequentialRecommender(nn.Module):
    """Base class: the shared surface, scoring, and directory save/load (safetensors + ``rankwise.json``).

    Subclasses set ``kind`` and ``config_class`` and implement ``encode_users``, ``item_embeddings`` and
    ``calculate_loss``. ``similarity``/``temperature`` come from the subclass config.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.item_ids: list[str] | None = None
        self.meta: dict[str, Any] = {}

    # -- the surface --------------------------------------------------------------------------
    def encode_users(self, item_seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser: one group of every trainable parameter at ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def sync_item_tower(self) -> None:
        """Bring cached item vectors up to date after training (no-op for id-embedding models)."""

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every item for each user: ``(B, n_items)``, column ``j`` = item index ``j + 1``.

        A multi-vector user ``(B, M, D)`` (HCN with max scoring) scores each item by its best vector.
        """
        users = self.encode_users(batch["item_seq"])  # (B, D) or (B, M, D)
        return score_users_items(users, self.item_embeddings()[1:], self.config.similarity)

    # -- shared pieces ------------------------------------------------------------------------
    def _positions(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Absolute positions counted back from the end: the last slot is always ``max_len - 1``."""
        from_end = torch.ones_like(item_seq[0]).flip(0).cumsum(0).flip(0)  # (L,): L, L-1, ..., 1
        return self.config.max_len - from_end  # (L,)

    def _next_item_loss(self, hidden: torch.Tensor, target: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """Full or sampled softmax (``config.loss``) over positions whose target is an item."""
        cfg = self.config
        keep = target > 0
        h, y = hidden[keep], target[keep]  # (N, D), (N,)
        if cfg.loss == "sampled":
            return sampled_softmax_loss(h, y, item_table, cfg.n_negatives, cfg.similarity, cfg.temperature)
        return full_softmax_loss(h, y, item_table, cfg.similarity, cfg.temperature)

    # -- directories --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **extra: Any) -> Path:
        """Write ``model.safetensors`` and ``rankwise.json`` (kind, config, item-id mapping, ``extra``)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / "model.safetensors"))
        meta = {**self.meta, **extra}
        write_rankwise_json(
            directory, self.kind, config=dataclasses.asdict(self.config), item_ids=self.item_ids, **meta
        )
        return directory

    @classmethod
    def _build(cls, config: Any, directory: Path, meta: dict[str, Any]) -> SequentialRecommender:
        return cls(config)

    @classmethod
    def from_pretrained(cls, directory: str | Path, trust_remote_code: bool = False) -> SequentialRecommender:
        """Load a directory written by :meth:`save_pretrained` (weights via safetensors only).

        Args:
            directory: the model directory.
            trust_remote_code: let transformers run code shipped in the directory (HLLM's LLMs). Only
                this argument turns it on; a ``trust_remote_code`` field in the directory's own
                ``rankwise.json`` is ignored with a warning.
        """
        from safetensors.torch import load_model

        directory = Path(directory)
        meta = read_rankwise_json(directory, cls.kind)
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        settings = caller_trust_only(meta["config"], directory / RANKWISE_JSON, trust_remote_code)
        if "trust_remote_code" not in fields:
            settings.pop("trust_remote_code")
        config = cls.config_class(**settings)
        try:
            model = cls._build(config, directory, meta)
        except ValueError as err:
            if "trust_remote_code" not in str(err):
                raise
            raise ModelDirError(f"{directory}: loading it needs code shipped in the directory; pass "
                                "trust_remote_code=True (--trust-remote-code) only if you trust it") from None
        load_model(model, str(directory / "model.safetensors"))
        model.item_ids = meta.get("item_ids")
        model.meta = {k: v for k, v in meta.items() if k not in ("kind", "config", "item_ids", "rankwise_version")}
        return model.eval()
