"""HSTU: hierarchical sequential transduction units, pointwise (softmax-free) gated attention over item ids."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rankwise.recsys._seq import SequentialRecommender, causal_mask, index_of, init_id_embeddings
from rankwise.recsys.sasrec import SASRecConfig

__all__ = ["HSTUConfig", "HSTULayer", "HSTU"]

LN_EPS = 1e-6  # the authors' LayerNorm epsilon


@dataclass
class HSTUConfig(SASRecConfig):
    """Hyper-parameters of :class:`HSTU`: the fields of :class:`SASRecConfig` plus the head widths.

    Defaults are the authors' ML-1M HSTU run (``configs/ml-1m/hstu-sampled-softmax-n128-final.gin``):
    d = 50, 2 layers, 1 head, dqk = dv = 50, dropout 0.2, max length 200, sampled softmax with 128
    negatives on L2-normalised vectors, τ = 0.05 (their optimiser: AdamW lr 1e-3, betas (0.9, 0.98), no
    weight decay, no gradient clipping: `RecTrainerConfig(adam_beta2=0.98, grad_clip=0)`).

    Args:
        n_items: catalog size (item indices ``1..n_items``; 0 is padding).
        hidden: embedding / model width ``d``.
        n_layers: HSTU layers.
        n_heads: attention heads ``h``.
        dqk: width of each head's queries and keys; ``None`` = ``hidden // n_heads`` (every published
            HSTU config has dqk = d / h).
        dv: width of each head's values and gates ``U``; ``None`` = ``hidden // n_heads``.
        dropout: dropout on the input embeddings and, in every layer, on ``LN(AV) ⊙ U`` before ``f2``
            (the authors' ``dropout_rate`` and ``linear_dropout_rate``, both 0.2 on ML-1M).
        max_len: longest input sequence (older items are cut); also the attention normaliser ``n`` and
            the number of relative-position biases per layer.
        loss: ``"ce"`` full softmax over all items, or ``"sampled"`` softmax with ``n_negatives``
            uniform negatives per position (the authors' setting).
        n_negatives: negatives per position for ``loss="sampled"``.
        similarity: ``"cosine"`` (L2-normalised user and item vectors, the authors') or ``"dot"``.
        temperature: softmax temperature τ on the similarity.
    """

    dqk: int | None = None
    dv: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 0 or self.n_heads < 1:
            raise ValueError(f"HSTUConfig: n_layers must be ≥ 0 and n_heads ≥ 1, got {self.n_layers}, {self.n_heads}")
        if (self.dqk is None or self.dv is None) and self.hidden % self.n_heads:
            raise ValueError(f"HSTUConfig: hidden={self.hidden} is not divisible by n_heads={self.n_heads}; "
                             "set dqk and dv explicitly")
        for name in ("dqk", "dv"):
            width = getattr(self, name)
            if width is not None and width < 1:
                raise ValueError(f"HSTUConfig: {name} must be ≥ 1 or None, got {width}")
        if self.max_len < 1:
            raise ValueError(f"HSTUConfig: max_len must be ≥ 1, got {self.max_len}")

    @property
    def head_dims(self) -> tuple[int, int]:
        """``(dqk, dv)`` with ``None`` resolved to ``hidden // n_heads``."""
        default = self.hidden // self.n_heads
        return self.dqk or default, self.dv or default


class HSTULayer(nn.Module):
    """One HSTU layer (pre-norm residual): gated pointwise attention with a relative-position bias.

    Formula:
        U, V, Q, K = split(φ(LN(X) W₁)); A = φ(Q Kᵀ + rab) ⊙ M / n; Y = X + f₂(Dropout(LN(A V) ⊙ U)),
        φ = SiLU, n = ``max_len``, M = the causal mask over items, rab[t, s] = w[t − s], no 1/√dqk.

    Args:
        hidden: model width ``d``.
        n_heads: heads ``h`` (rab is shared by the heads, as in the authors' code).
        dqk: query/key width per head.
        dv: value/gate width per head.
        dropout: dropout on ``LN(A V) ⊙ U`` before ``f₂``.
        max_len: the normaliser ``n`` and the number of distances ``t − s`` with a learned bias.

    Shapes:
        x: ``(B, L, D)``; mask: ``(B, 1, L, L)`` bool; distance: ``(L, L)`` int64 (``t − s``, clamped
        to ``0..max_len − 1``); returns ``(B, L, D)``. ``attention`` returns A ``(B, h, L, L)``.
    """

    def __init__(self, hidden: int, n_heads: int, dqk: int, dv: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.hidden, self.n_heads, self.dqk, self.dv, self.max_len = hidden, n_heads, dqk, dv, max_len
        self.f1 = nn.Linear(hidden, 2 * n_heads * (dv + dqk), bias=False)
        self.f2 = nn.Linear(n_heads * dv, hidden)
        self.rab = nn.Parameter(torch.empty(max_len))  # one bias per causal distance t − s
        self.drop = nn.Dropout(dropout)
        with torch.no_grad():  # the authors' init
            nn.init.normal_(self.f1.weight, std=0.02)
            nn.init.xavier_uniform_(self.f2.weight)
            nn.init.normal_(self.rab, std=0.02)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, L, D)`` → U ``(B, L, h·dv)``, V ``(B, h, L, dv)``, Q, K ``(B, h, L, dqk)``."""
        h, dv, dqk = self.n_heads, self.dv, self.dqk
        uvqk = F.silu(self.f1(F.layer_norm(x, (self.hidden,), eps=LN_EPS)))  # (B, L, 2h(dv + dqk))
        u, v, q, k = uvqk.split([h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        v, q, k = (t.unflatten(-1, (h, -1)).transpose(1, 2) for t in (v, q, k))
        return u, v, q, k

    def _weights(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2) + self.rab[distance]  # (B, h, L, L)
        return (F.silu(scores) / self.max_len).masked_fill(~mask, 0.0)  # (B, h, L, L)

    def attention(self, x: torch.Tensor, mask: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """The attention weights A of this layer for input ``x``: ``(B, h, L, L)``."""
        _, _, q, k = self._project(x)
        return self._weights(q, k, mask, distance)

    def _output(self, x: torch.Tensor, u: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
        """``x + f₂(Dropout(LN(A V) ⊙ U))`` with ``av`` = A V as ``(B, h, Lq, dv)``: → ``(B, Lq, D)``."""
        gated = F.layer_norm(av.transpose(1, 2).flatten(2), (self.n_heads * self.dv,), eps=LN_EPS) * u  # (B, Lq, h·dv)
        return x + self.f2(self.drop(gated))

    def forward_kv(
        self, x: torch.Tensor, mask: torch.Tensor, distance: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`forward` and this layer's keys and values ``2 × (B, h, L, d)`` (for cached extra tokens)."""
        u, v, q, k = self._project(x)
        return self._output(x, u, self._weights(q, k, mask, distance) @ v), (k, v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x, mask, distance)[0]

    def forward_cached(
        self,
        x: torch.Tensor,
        seq_kv: tuple[torch.Tensor, torch.Tensor],
        seq_mask: torch.Tensor,
        seq_distance: torch.Tensor,
        extra_kv: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One extra token per query position, attending to the cached sequence and to its own earlier
        extra tokens, exactly as if it were appended to the sequence (:class:`ReaRecHSTU`'s reasoning).

        Extra step ``j`` of query position ``t`` sits at position ``t + j + 1``: the bias of a sequence
        key ``s`` is ``rab[t + j + 1 − s]`` (``seq_distance``), of an earlier step ``i`` ``rab[j − i]``.

        Shapes:
            x: ``(B, Lq, D)``; seq_kv: 2 × ``(B, h, L, d)``; seq_mask: ``(B, 1, Lq, L)`` bool;
            seq_distance: ``(Lq, L)`` int64, clamped; extra_kv: list of 2 × ``(B, h, Lq, d)``;
            returns ``(B, Lq, D)`` and this token's (k, v).
        """
        u, v, q, k = self._project(x)  # q, k, v: (B, h, Lq, d)
        seq_k, seq_v = seq_kv
        a_seq = self._weights(q, seq_k, seq_mask, seq_distance)  # (B, h, Lq, L)
        ks = torch.stack([kk for kk, _ in extra_kv] + [k], dim=-2)  # (B, h, Lq, S, dqk)
        vs = torch.stack([vv for _, vv in extra_kv] + [v], dim=-2)  # (B, h, Lq, S, dv)
        back = torch.arange(len(extra_kv), -1, -1, device=q.device)  # (S,): j − i for i = 0..j
        a_extra = F.silu((q.unsqueeze(-2) * ks).sum(-1) + self.rab[back.clamp(max=self.max_len - 1)]) / self.max_len
        av = a_seq @ seq_v + (a_extra.unsqueeze(-1) * vs).sum(-2)  # (B, h, Lq, dv)
        return self._output(x, u, av), (k, v)


class HSTU(SequentialRecommender):
    """HSTU over item ids: a stack of :class:`HSTULayer` in place of SASRec's transformer blocks.

    Formula:
        X⁰ = E[s]·√d + P; Xˡ⁺¹ = HSTULayer(Xˡ) with A = SiLU(Q Kᵀ + rab) ⊙ M / n (no softmax, no 1/√dqk);
        score(u, i) = s(h_L, E_i)/τ, s = cosine or dot; next-item softmax at every position.

    Paper:
        Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for
        Generative Recommendations", ICML 2024, https://arxiv.org/abs/2402.17152; details the paper
        leaves open (no 1/√dqk, rab shared by heads, LayerNorms without affine weights, dropout before
        f₂, no final LayerNorm, initialisation) follow the authors' research code.
        Differences from the paper: rab is position-only: the authors add a learned bias of the
        bucketed time gap between items (⌊ln|Δt| / 0.301⌋, 128 buckets), but ``SequenceData`` carries
        no timestamps (our ML-1M ships without them); only the causal half of the authors' 2n − 1
        relative positions is stored (the other half never reaches an unmasked score). A is divided
        by ``max_len`` (200), the authors by their padded length max_len + 11 output slots (211 on
        ML-1M). Sequences are left-padded with positions counted back from the latest item (always at
        ``max_len − 1``), where the authors count from the oldest item (position 0); the relative bias
        is the same either way. Only the sequential-recommendation setting of the paper's §4.1.1:
        no interleaved actions/features, no stochastic length, no M-FALCON, no fused kernels.

    Initialisation (the authors'): items N(0, 0.02²) truncated, positions Xavier-normal, W₁ N(0, 0.02²),
    f₂ Xavier-uniform, rab N(0, 0.02²).

    Args:
        config: :class:`HSTUConfig`.

    Shapes:
        item_seq: ``(B, L)`` left-padded item indices, ``L ≤ max_len``; ``encode_sequence`` →
        ``(B, L, D)``; ``encode_users`` → ``(B, D)``; ``item_embeddings()`` → ``(n_items + 1, D)``;
        ``full_sort_predict`` → ``(B, n_items)``.

    Example:
        >>> model = HSTU(HSTUConfig(n_items=100, hidden=16, max_len=8))
        >>> model.encode_users(torch.tensor([[0, 0, 3, 7]])).shape
        torch.Size([1, 16])
    """

    kind = "hstu"
    config_class = HSTUConfig

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__(config)
        dqk, dv = config.head_dims
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.emb_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            HSTULayer(config.hidden, config.n_heads, dqk, dv, config.dropout, config.max_len)
            for _ in range(config.n_layers)
        )
        init_id_embeddings(self.item_emb, self.pos_emb)
        nn.init.xavier_normal_(self.pos_emb.weight)  # the authors' HSTU redraws positions (SASRec keeps N(0, 1/d))

    def embed(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``E[s]·√d + P`` with padding zeroed: ``(B, L)`` → ``(B, L, D)``."""
        x = self.item_emb(item_seq) * self.config.hidden**0.5 + self.pos_emb(self._positions(item_seq))
        return self.emb_drop(x) * (item_seq > 0).unsqueeze(-1).to(x.dtype)

    def _distance(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``t − s`` for every query ``t`` and key ``s``, clamped to the biased range: ``(L, L)``."""
        idx = index_of(item_seq)  # (L,)
        return (idx[:, None] - idx[None, :]).clamp(0, self.config.max_len - 1)

    def encode_sequence(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: ``(B, L)`` → ``(B, L, D)``."""
        return self.encode_sequence_cached(item_seq)[0]

    def encode_sequence_cached(self, item_seq: torch.Tensor):  # noqa: ANN201 - (hidden (B, L, D), KV cache, mask)
        """Hidden state at every position, every layer's keys and values, and the attention mask."""
        mask, distance = causal_mask(item_seq), self._distance(item_seq)  # (B, 1, L, L), (L, L)
        x, cache = self.embed(item_seq), []
        for layer in self.layers:
            x, kv = layer.forward_kv(x, mask, distance)
            cache.append(kv)
        return x, cache, mask

    def forward_cached(
        self, x: torch.Tensor, cache: list, seq_mask: torch.Tensor, extra_cache: list[list]
    ) -> tuple[torch.Tensor, list]:
        """Extra step ``j = len(extra_cache)`` for the last ``Lq`` positions of a cached sequence through
        every layer (see :meth:`HSTULayer.forward_cached`); returns ``(B, Lq, D)`` and its per-layer cache.

        Shapes: x ``(B, Lq, D)``; seq_mask ``(B, 1, Lq, L)``."""
        if not cache:
            return x, []
        pos = index_of(seq_mask[0, 0].long())  # (L,), from the mask: its length stays dynamic in an ONNX export
        query = pos[-x.shape[1]:]  # (Lq,): the last Lq positions, where reasoning starts (a slice that exports with L dynamic)
        distance = (query[:, None] + len(extra_cache) + 1 - pos[None, :]).clamp(0, self.config.max_len - 1)  # (Lq, L)
        own = []
        for n, layer in enumerate(self.layers):
            x, kv = layer.forward_cached(x, cache[n], seq_mask, distance, [step[n] for step in extra_cache])
            own.append(kv)
        return x, own

    def encode_users(self, item_seq: torch.Tensor) -> torch.Tensor:
        """User vector = hidden state at the last (most recent) position: ``(B, L)`` → ``(B, D)``."""
        return self.encode_sequence(item_seq)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        """The item table ``(n_items + 1, D)`` (row 0 = padding)."""
        return self.item_emb.weight

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-item softmax at every position with a target: batch ``item_seq``, ``target`` (B, L)."""
        hidden = self.encode_sequence(batch["item_seq"])  # (B, L, D)
        return self._next_item_loss(hidden, batch["target"], self.item_embeddings())
