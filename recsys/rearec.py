"""ReaRec: latent multi-step reasoning on top of a SASRec or an HSTU encoder, with the ERL and PRL objectives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rankwise.recsys._seq import NextItemLogits, score_matrix
from rankwise.recsys.hstu import HSTU, HSTUConfig
from rankwise.recsys.sasrec import SASRec, SASRecConfig

__all__ = ["ReaRecConfig", "ReaRec", "ReaRecHSTUConfig", "ReaRecHSTU"]


@dataclass
class ReaRecConfig(SASRecConfig):
    """Hyper-parameters of :class:`ReaRec`: a :class:`SASRecConfig` plus the reasoning knobs.

    Args:
        reasoning_steps: K extra latent steps after the sequence (0 = plain SASRec, exactly).
        objective: ``"erl"`` (ensemble: user = mean of r_0..r_K, KL diversity between steps) or
            ``"prl"`` (progressive: user = r_K, temperature-annealed CE per step, noise contrast).
        erl_lambda: weight λ of the ERL diversity term.
        prl_alpha: PRL temperature growth α: step k uses τ·α^{K−k}.
        prl_noise_std: std of the Gaussian noise on reasoning inputs for PRL's contrastive term.
        prl_warmup_epochs: epochs before the contrastive term is switched on.
        prl_contrastive_weight: weight of the contrastive term (1 = the plain sum of DESIGN.md).
        prl_contrast: ``"views"`` (the authors' code): the batch runs a second time with independent
            dropout and Gaussian noise on its reasoning inputs, and at every reasoning step k ≥ 1 the
            final position's state of one view must pick its own twin among the batch's other view,
            ``CE(r̃_k · r_kᵀ / τ, diag)`` on dot products, averaged over steps; ``"last-step"`` (an
            earlier reading): the last step only, cosine scores, a noisy view sharing the clean pass.
        reasoning_dropout: dropout rate on each reasoning step's input (the authors' code: 0.2); ``0``
            disables it. ``True`` (older configs) means the model's ``dropout`` rate.
        input_layernorm: LayerNorm the item inputs (``E[s]·√d + P``) as the reasoning inputs are, so
            both enter the blocks on one scale (the authors LayerNorm both). Off by default, which keeps
            earlier saved models loadable; ``benchmarks/recsys_ml1m.py --authors-inputs`` sets it with
            ``reasoning_dropout=0.2``.
        post_ln: post-LayerNorm blocks, as in the authors' (RecBole) encoder; off: pre-LN, as SASRec here.

    With ``loss="sampled"`` every step's softmax, and ERL's KL between steps, run over the target plus
    ``n_negatives`` random items shared by all steps of a position (our approximation, not in the paper:
    on ML-1M the full softmax over 3,706 items for K + 1 states dominates the CPU step time).
    """

    loss: Literal["ce", "sampled"] = "ce"
    temperature: float = 0.07
    reasoning_steps: int = 2
    objective: Literal["erl", "prl"] = "erl"
    erl_lambda: float = 0.05
    prl_alpha: float = 5.0
    prl_noise_std: float = 0.01
    prl_warmup_epochs: int = 2
    prl_contrastive_weight: float = 1.0
    prl_contrast: Literal["views", "last-step"] = "views"
    reasoning_dropout: float | bool = 0.0
    input_layernorm: bool = False
    post_ln: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reasoning_steps < 0:
            raise ValueError(f"ReaRecConfig: reasoning_steps must be ≥ 0, got {self.reasoning_steps}")
        if self.objective not in ("erl", "prl"):
            raise ValueError(f"ReaRecConfig: objective must be 'erl' or 'prl', got {self.objective!r}")
        rate = self.dropout if self.reasoning_dropout is True else float(self.reasoning_dropout)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"ReaRecConfig: reasoning_dropout must be in [0, 1), got {self.reasoning_dropout}")


def prl_views_infonce(view1: list[torch.Tensor], view2: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """PRL's contrast between two views of a batch, at every reasoning step (the authors' code).

    Formula: ``mean_k CE(v2_k v1_kᵀ / τ, diag)``: row ``b`` of view 2 must score its own twin ``b`` of
    view 1 highest among the batch, on dot products.

    Shapes: ``view1[k], view2[k]``: ``(B, D)`` for each step ``k = 1..K``; returns ``()``.
    """
    losses = []
    for a, b in zip(view1, view2):
        sim = (b @ a.T) / temperature  # (B, B)
        losses.append(F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device)))
    return torch.stack(losses).mean()


class LatentReasoning(nn.Module):
    """ReaRec's reasoning steps and objectives over any backbone that caches its sequence pass.

    A backbone provides ``encode_sequence_cached(item_seq) -> (hidden (B, L, D), cache, mask)`` and
    ``forward_cached(x (B, Lq, D), cache, mask rows (B, 1, Lq, L), extra_cache) -> (r, own cache)``
    (one extra token per query position, reusing the sequence's keys and values), plus the item and
    position tables ``item_emb`` / ``pos_emb`` / ``emb_drop`` of :class:`SASRec` and :class:`HSTU`.
    See :class:`ReaRec` for the formulas.
    """

    def __init__(self, config: ReaRecConfig) -> None:
        super().__init__(config)
        self.rpe = nn.Embedding(max(config.reasoning_steps, 1), config.hidden)
        self.reason_ln = nn.LayerNorm(config.hidden)
        rate = config.dropout if config.reasoning_dropout is True else float(config.reasoning_dropout)
        self.reason_drop = nn.Dropout(rate)
        self.input_ln = nn.LayerNorm(config.hidden) if config.input_layernorm else None

    def embed(self, item_seq: torch.Tensor) -> torch.Tensor:
        """The backbone's input embeddings, LayerNormed first with ``input_layernorm``: ``(B, L)`` → ``(B, L, D)``."""
        if self.input_ln is None:
            return super().embed(item_seq)  # the backbone's
        x = self.item_emb(item_seq) * self.config.hidden**0.5 + self.pos_emb(self._positions(item_seq))
        return self.emb_drop(self.input_ln(x)) * (item_seq > 0).unsqueeze(-1).to(x.dtype)

    def reason(
        self, hidden: torch.Tensor, cache: list, mask: torch.Tensor, noise_std: float = 0.0
    ) -> list[torch.Tensor]:
        """Run the K reasoning steps for the query positions in ``hidden``.

        Shapes:
            hidden: ``(B, Lq, D)`` = r_0 at the query positions; mask: ``(B, 1, Lq, L)`` rows of the
            causal mask for those positions; returns ``[r_0, …, r_K]``, each ``(B, Lq, D)``.
        """
        states, extra = [hidden], []
        for k in range(self.config.reasoning_steps):
            x = self.reason_ln(states[-1] + self.rpe.weight[k])  # (B, Lq, D)
            x = self.reason_drop(x)  # identity in eval mode or at rate 0
            if noise_std > 0:
                x = x + noise_std * torch.randn_like(x)
            r, own = self.forward_cached(x, cache, mask, extra)
            extra.append(own)
            states.append(r)
        return states

    def _user_from_states(self, states: list[torch.Tensor]) -> torch.Tensor:
        if self.config.objective == "erl":
            return torch.stack(states).mean(0)
        return states[-1]

    def encode_users(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Reason from the last position only: ``(B, L)`` → ``(B, D)``."""
        hidden, cache, mask = self.encode_sequence_cached(item_seq)
        states = self.reason(hidden[:, -1:], cache, mask[:, :, -1:])
        return self._user_from_states(states)[:, 0]

    def calculate_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """ERL or PRL loss; reads ``batch["epoch"]`` (int, default 0) for PRL's warm-up."""
        cfg = self.config
        hidden, cache, mask = self.encode_sequence_cached(batch["item_seq"])
        states = self.reason(hidden, cache, mask)  # K + 1 × (B, L, D)
        target = batch["target"]
        keep = target > 0
        scorer = NextItemLogits(target[keep], self.item_embeddings(), cfg.n_negatives if cfg.loss == "sampled" else 0,
                                cfg.similarity)
        if cfg.objective == "erl":
            loss = scorer.loss(self._user_from_states(states)[keep], cfg.temperature)
            if cfg.reasoning_steps == 0:
                return loss
            logp = [scorer.logits(s[keep], cfg.temperature).log_softmax(-1) for s in states]  # K + 1 × (N, C)
            # Σ_{i≠j} KL(p_j ‖ sg p_i) = Σ_j Σ_t p_j (K·log p_j − Σ_{i≠j} sg log p_i): one pass per step.
            others = len(logp) - 1
            total_sg = torch.stack([lp.detach() for lp in logp]).sum(0)  # (N, C)
            kl = sum(
                (lp.exp() * (others * lp - (total_sg - lp.detach()))).sum(-1).mean() for lp in logp
            )
            pairs = others * len(logp)
            return loss - cfg.erl_lambda * kl / pairs
        steps = cfg.reasoning_steps
        loss = scorer.loss(states[-1][keep], cfg.temperature)
        if steps == 0:
            return loss
        early = [scorer.loss(s[keep], cfg.temperature * cfg.prl_alpha ** (steps - k)) for k, s in enumerate(states[:-1])]
        loss = loss + torch.stack(early).mean()
        if int(batch.get("epoch", 0)) >= cfg.prl_warmup_epochs and cfg.prl_contrastive_weight > 0 and cfg.prl_contrast == "views":
            hidden2, cache2, mask2 = self.encode_sequence_cached(batch["item_seq"])  # the second view: its own dropout
            view2 = self.reason(hidden2[:, -1:], cache2, mask2[:, :, -1:], noise_std=cfg.prl_noise_std)
            return loss + cfg.prl_contrastive_weight * prl_views_infonce([s[:, -1] for s in states[1:]],
                                                                         [s[:, 0] for s in view2[1:]], cfg.temperature)
        if int(batch.get("epoch", 0)) >= cfg.prl_warmup_epochs and cfg.prl_contrastive_weight > 0:
            last = hidden[:, -1:]  # (B, 1, D): the window's final position
            noisy = self.reason(last, cache, mask[:, :, -1:], noise_std=cfg.prl_noise_std)[-1][:, 0]  # (B, D)
            clean = states[-1][:, -1]  # (B, D)
            sim = score_matrix(clean, noisy, "cosine", cfg.temperature)  # (B, B)
            labels = torch.arange(sim.shape[0], device=sim.device)  # (B,): each window's own noisy twin
            loss = loss + cfg.prl_contrastive_weight * F.cross_entropy(sim, labels)
        return loss


class ReaRec(LatentReasoning, SASRec):
    """SASRec encoder followed by K latent reasoning steps that reuse the sequence's KV cache.

    Formula:
        r_0 = h_L; x_k = LN(r_{k−1} + RPE[k−1]) (optionally dropped out); r_k = Transformer(x_k | KV of s_1..s_L, x_1..x_{k−1}).
        Scores p_k = softmax(s(r_k, E)/τ).
        ERL: u = mean(r_0..r_K); L = CE(u) − λ·mean_{i≠j} KL(p_j ‖ sg(p_i)).
        PRL: u = r_K; L = CE(r_K, τ) + mean_{k<K} CE(r_k, τ·α^{K−k}) + mean_{k≥1} InfoNCE(r̃_k, r_k) where
        r̃ is a second view of the batch (independent dropout, Gaussian noise on the reasoning inputs),
        switched on after ``prl_warmup_epochs`` (``prl_contrast``).

    Paper:
        Tang et al., "Think Before Recommend: Unleashing the Latent Reasoning Power for Sequential
        Recommendation", 2025, https://arxiv.org/abs/2503.22675. Differences from the paper: reasoning
        runs at every position of a training window in one pass (each position's reasoning tokens see
        that position's causal prefix). This is *not* their one-sample-per-prefix augmentation: the
        reasoning positions (RPE) count from the window end for every position, and a prefix's
        reasoning tokens see the prefix in the window's positional frame, not in its own;
        the PRL contrast uses the last position of each window as the in-batch sample set; similarity is
        configurable (cosine by default here, dot in the paper).

    Args:
        config: :class:`ReaRecConfig`.

    Shapes:
        item_seq: ``(B, L)``; ``encode_users`` → ``(B, D)`` (reasoning included).

    Example:
        >>> model = ReaRec(ReaRecConfig(n_items=100, hidden=16, max_len=8, reasoning_steps=2))
        >>> model.encode_users(torch.tensor([[0, 0, 3, 7]])).shape
        torch.Size([1, 16])
    """

    kind = "rearec"
    config_class = ReaRecConfig

    def encode_sequence_cached(self, item_seq: torch.Tensor):  # noqa: ANN201 - (hidden, KV cache, mask)
        return self.encode_sequence(item_seq)

    def forward_cached(self, x: torch.Tensor, cache: list, mask: torch.Tensor, extra: list) -> tuple[torch.Tensor, list]:
        return self.encoder.forward_cached(x, cache, mask, extra)


@dataclass
class ReaRecHSTUConfig(ReaRecConfig, HSTUConfig):
    """Hyper-parameters of :class:`ReaRecHSTU`: :class:`HSTUConfig`'s backbone (head widths ``dqk``,
    ``dv``) with :class:`ReaRecConfig`'s reasoning knobs (``post_ln`` does not apply: HSTU layers are
    pre-norm)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.post_ln:
            raise ValueError("ReaRecHSTUConfig: post_ln is an option of transformer blocks; HSTU layers are pre-norm")


class ReaRecHSTU(LatentReasoning, HSTU):
    """ReaRec's K latent reasoning steps (ERL or PRL, as :class:`ReaRec`) on the :class:`HSTU` backbone.

    Formula:
        r_0 = h_L (HSTU, no final LayerNorm); x_k = LN(r_{k−1} + RPE[k−1]); r_k = HSTU layers on x_k,
        with x_k attending, in every layer, to the cached keys/values of s_1..s_L and of x_1..x_{k−1}
        exactly as a token appended at position L + k (pointwise SiLU attention, relative bias
        rab[L + k − s] to item s, rab[k − j] to x_j).

    Paper:
        ReaRec (Tang et al., 2025, https://arxiv.org/abs/2503.22675) reasons on a SASRec-style
        transformer; putting the steps on HSTU (Zhai et al., ICML 2024) is ours, as the issue asked for
        "reasoning on either backbone". The differences from the paper are :class:`ReaRec`'s.

    Shapes:
        item_seq: ``(B, L)``; ``encode_users`` → ``(B, D)`` (reasoning included).

    Example:
        >>> model = ReaRecHSTU(ReaRecHSTUConfig(n_items=100, hidden=16, max_len=8, reasoning_steps=2))
        >>> model.encode_users(torch.tensor([[0, 0, 3, 7]])).shape
        torch.Size([1, 16])
    """

    kind = "rearec-hstu"
    config_class = ReaRecHSTUConfig
