"""HCN-style coarse ranking: hierarchical multi-interest extraction with a co-interest network.

No code or full text of HCN is public: this is our design after the description in DESIGN.md, with
MIND / ComiRec as the closest published references. Call it "HCN-style" in docs and tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rankwise.recsys._seq import (
    CausalEncoder,
    SequentialRecommender,
    causal_mask,
    NextItemLogits,
    full_softmax_loss,
    index_of,
    init_id_embeddings,
)

__all__ = ["HCNConfig", "HCN"]


@dataclass
class HCNConfig:
    """Hyper-parameters of :class:`HCN`.

    Args:
        n_items: catalog size (indices ``1..n_items``).
        hidden: width ``d`` of item and interest vectors.
        n_layers: causal transformer blocks under the interest extractor (0 = raw embeddings).
        n_heads: heads of the behaviour encoder and the co-interest attention.
        dropout: dropout.
        max_len: longest user sequence.
        n_interests: M interest centres per user.
        levels: refinement levels of the centres (each level re-attends to the behaviours).
        short_len: the most recent ``short_len`` behaviours form the short-term sequence.
        diversity_weight: weight of the penalty on squared cosine between a user's centres.
        scoring: ``"attention"`` = one user vector, the interests weighted by their match with the
            latest behaviour (one vector: a plain two-tower index); ``"max"`` = score = max over
            interests (``encode_users`` returns ``(B, M, D)``; training uses the interest closest to
            the target, as ComiRec does).
        similarity: ``"cosine"`` or ``"dot"``.
        temperature: softmax temperature τ.
        loss: ``"ce"`` (full softmax over the catalog) or ``"sampled"`` (the target against
            ``n_negatives`` uniform random items: the loss for catalogs too large to score whole).
        n_negatives: negatives per position for ``loss="sampled"``.
    """

    n_items: int
    hidden: int = 64
    n_layers: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    n_interests: int = 4
    levels: int = 2
    short_len: int = 10
    diversity_weight: float = 0.1
    scoring: Literal["attention", "max"] = "attention"
    similarity: Literal["dot", "cosine"] = "cosine"
    temperature: float = 0.05
    loss: Literal["ce", "sampled"] = "ce"
    n_negatives: int = 128

    def __post_init__(self) -> None:
        if self.n_interests < 1 or self.levels < 1 or self.short_len < 1:
            raise ValueError(
                f"HCNConfig: n_interests, levels and short_len must be ≥ 1, got "
                f"{self.n_interests}, {self.levels}, {self.short_len}"
            )
        if self.scoring not in ("attention", "max"):
            raise ValueError(f"HCNConfig: scoring must be 'attention' or 'max', got {self.scoring!r}")
        if self.loss not in ("ce", "sampled"):
            raise ValueError(f"HCNConfig: loss must be 'ce' or 'sampled', got {self.loss!r}")


class _InterestExtractor(nn.Module):
    """M learned centres refined over ``levels``: centres attend to the allowed behaviours, then update.

    Formula:
        C^0 = C_learned; A^ℓ = softmax_s((C^ℓ W_q^ℓ)(H W_k^ℓ)ᵀ/√d + mask); C^{ℓ+1} = LN(C^ℓ + A^ℓ H W_v^ℓ).

    Shapes:
        h: ``(B, L, D)``; allowed: ``(B, L, L)`` bool (query position t may use behaviour s);
        returns ``(B, L, M, D)``: the centres seen from every position t.
    """

    def __init__(self, hidden: int, n_interests: int, levels: int) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(n_interests, hidden) * hidden**-0.5)
        self.q = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(levels))
        self.kv = nn.ModuleList(nn.Linear(hidden, 2 * hidden, bias=False) for _ in range(levels))
        self.ln = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(levels))

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = h.shape
        c = self.centres.expand(b, length, -1, -1)  # (B, L, M, D)
        bias = h.new_zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, :, None]
        for q_proj, kv_proj, ln in zip(self.q, self.kv, self.ln):
            k, v = kv_proj(h).chunk(2, dim=-1)  # (B, L, D) each
            scores = torch.einsum("btmd,bsd->btms", q_proj(c), k) * d**-0.5 + bias  # (B, L, M, L)
            c = ln(c + torch.einsum("btms,bsd->btmd", scores.softmax(-1), v))  # (B, L, M, D)
        return c


class HCN(SequentialRecommender):
    """HCN-style two-tower coarse ranker with long/short-term multi-interest users.

    Formula:
        H = Transformer_causal(E[s] + P); C_long = Extract(H, s ≤ t), C_short = Extract(H, t−S < s ≤ t);
        C̃_long = LN(C_long + Attn(C_long, C_short)), C̃_short = LN(C_short + Attn(C_short, C_long));
        I = LN(C̃_long + C̃_short) ∈ ℝ^{M×d}; attention scoring: u = Σ_m softmax_m(I_m·W h_t) I_m,
        score = s(u, e_i)/τ; max scoring: score = max_m s(I_m, e_i)/τ.
        L = CE + β · mean_{m≠m'} cos(I_m, I_m')².

    Paper:
        "HCN: Hierarchical Co-interest Network" for coarse ranking — no code or full text is public; the
        whole architecture here is ours (HCN-style), after DESIGN.md. Closest published references: MIND
        (Li et al. 2019) and ComiRec (Cen et al. 2020, https://arxiv.org/abs/2005.09347).

    Args:
        config: :class:`HCNConfig`.

    Shapes:
        item_seq ``(B, L)`` → ``encode_users`` ``(B, D)`` (attention scoring) or ``(B, M, D)`` (max);
        ``encode_interests`` → ``(B, M, D)``; ``item_embeddings()`` → ``(n_items + 1, D)``.

    Example:
        >>> model = HCN(HCNConfig(n_items=100, hidden=16, max_len=8))
        >>> model.encode_users(torch.tensor([[0, 0, 3, 7]])).shape
        torch.Size([1, 16])
    """

    kind = "hcn"
    config_class = HCNConfig

    def __init__(self, config: HCNConfig) -> None:
        super().__init__(config)
        d = config.hidden
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_drop = nn.Dropout(config.dropout)
        self.encoder = CausalEncoder(d, config.n_layers, config.n_heads, config.dropout)
        self.long = _InterestExtractor(d, config.n_interests, config.levels)
        self.short = _InterestExtractor(d, config.n_interests, config.levels)
        self.long_to_short = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self.short_to_long = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        self.ln_long, self.ln_short, self.ln_out = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.readout = nn.Linear(d, d, bias=False)
        init_id_embeddings(self.item_emb, self.pos_emb)

    def _interests(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interests at every position ``(B, L, M, D)`` and the behaviour states ``(B, L, D)``."""
        d = self.config.hidden
        x = self.item_emb(item_seq) * d**0.5 + self.pos_emb(self._positions(item_seq))
        x = self.emb_drop(x) * (item_seq > 0).unsqueeze(-1).to(x.dtype)
        h = self.encoder(x, causal_mask(item_seq))[0]  # (B, L, D)
        long_ok = causal_mask(item_seq)[:, 0]  # (B, L, L)
        idx = index_of(item_seq)  # (L,)
        recent = (idx[:, None] - idx[None, :]) < self.config.short_len  # (L, L): t − s < S
        c_long = self.long(h, long_ok)  # (B, L, M, D)
        c_short = self.short(h, long_ok & recent[None])  # (B, L, M, D)
        b, length, m, _ = c_long.shape
        fl, fs = c_long.reshape(b * length, m, d), c_short.reshape(b * length, m, d)
        co_long = self.ln_long(fl + self.long_to_short(fl, fs, fs, need_weights=False)[0])
        co_short = self.ln_short(fs + self.short_to_long(fs, fl, fl, need_weights=False)[0])
        return self.ln_out(co_long + co_short).view(b, length, m, d), h

    def _readout(self, interests: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Attention-weighted interest: ``(..., M, D)``, ``(..., D)`` → ``(..., D)``."""
        w = (interests @ self.readout(h).unsqueeze(-1)).squeeze(-1) * self.config.hidden**-0.5  # (..., M)
        return (w.softmax(-1).unsqueeze(-1) * interests).sum(-2)

    def encode_interests(self, item_seq: torch.Tensor) -> torch.Tensor:
        """The M interest vectors of the latest position: ``(B, L)`` → ``(B, M, D)``."""
        return self._interests(item_seq)[0][:, -1]

    def encode_users(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` with attention scoring, ``(B, M, D)`` with max scoring (see :class:`HCNConfig`)."""
        interests, h = self._interests(item_seq)
        if self.config.scoring == "max":
            return interests[:, -1]
        return self._readout(interests[:, -1], h[:, -1])

    def item_embeddings(self) -> torch.Tensor:
        """The item table ``(n_items + 1, D)`` (row 0 = padding)."""
        return self.item_emb.weight

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-item loss at every position (full or sampled softmax) plus the centre diversity penalty."""
        cfg = self.config
        interests, h = self._interests(batch["item_seq"])  # (B, L, M, D), (B, L, D)
        keep = batch["target"] > 0
        target = batch["target"][keep]  # (N,)
        table = self.item_embeddings()
        inter = interests[keep]  # (N, M, D)
        if cfg.scoring == "max":
            e = table[target].unsqueeze(1)  # (N, 1, D)
            fit = F.cosine_similarity(inter, e, dim=-1) if cfg.similarity == "cosine" else (inter * e).sum(-1)
            user = inter[torch.arange(len(target), device=target.device), fit.argmax(1)]  # (N, D)
        else:
            user = self._readout(inter, h[keep])  # (N, D)
        if cfg.loss == "sampled":
            loss = NextItemLogits(target, table, cfg.n_negatives, cfg.similarity).loss(user, cfg.temperature)
        else:
            loss = full_softmax_loss(user, target, table, cfg.similarity, cfg.temperature)
        unit = F.normalize(inter, dim=-1)
        gram = unit @ unit.transpose(1, 2)  # (N, M, M)
        off = ~torch.eye(cfg.n_interests, dtype=torch.bool, device=gram.device)
        return loss + cfg.diversity_weight * gram[:, off].pow(2).mean()
