"""Rank-GRPO: GRPO with the rank as the unit of credit, for list-shaped completions, on TRL.

The completion is a ranked list, one item per line (``[3]\\n[1]\\n...``). Dataset rows carry
``prompt`` and ``labels`` (relevance of the prompt's passages ``[1]..[n]``). :class:`RankGRPOTrainer`
subclasses TRL's ``GRPOTrainer`` and overrides two hooks: ``_generate_and_score_completions`` (to
replace the per-sequence advantage by per-rank advantages spread over each item's tokens) and
``_compute_loss`` (rank-level importance ratios); the loss itself is :func:`rank_grpo_loss`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from rankwise.train.grpo._completions import completion_text

__all__ = [
    "parse_ranked_lines",
    "rank_rewards",
    "rank_advantages",
    "token_rank_index",
    "rank_grpo_loss",
    "rank_ndcg_reward",
    "RankGRPOConfig",
    "RankGRPOTrainer",
]


def _line_ranks(text: str) -> list[int]:
    """Rank (0-based) of each ``"\\n"``-separated line of ``text``; −1 for a blank (whitespace-only) line.

    The one line segmentation of Rank-GRPO: :func:`parse_ranked_lines` reads items from it and
    :func:`token_rank_index` maps tokens through it, so a token is credited with the item it belongs to.

    Example:
        >>> _line_ranks("[2]\\n\\n[1]\\n")
        [0, -1, 1, -1]
    """
    out, k = [], 0
    for line in text.split("\n"):
        out.append(k if line.strip() else -1)
        k += bool(line.strip())
    return out


def parse_ranked_lines(text: str, n_items: int) -> list[int | None]:
    """0-based passage id named on each non-blank line (None: no valid id, or a repeat).

    Example:
        >>> parse_ranked_lines("[2]\\n[2]\\n\\n[9]\\n1\\n", 3)
        [1, None, None, 0]
    """
    out: list[int | None] = []
    for line, k in zip(text.split("\n"), _line_ranks(text)):
        if k < 0:
            continue
        match = re.search(r"\d+", line)
        index = int(match.group()) - 1 if match else -1
        out.append(index if 0 <= index < n_items and index not in out else None)
    return out


def rank_rewards(items: Sequence[int | None], labels: Sequence[float], n_ranks: int, mode: Literal["exp_inf", "log_decay"] = "exp_inf") -> list[float]:
    """Per-rank rewards of one ranked list (ranks past the list's end count as relevance 0).

    Formula: rel_k = labels[item_k] (0 if invalid or missing);
        ``exp_inf``: r_k = rel_k;  ``log_decay``: r_k = Σ_{j ≥ k} rel_j / log2(j + 1)  (1-based j).

    Example:
        >>> rank_rewards([1, 0], [0.0, 1.0], 2)
        [1.0, 0.0]
        >>> [round(r, 4) for r in rank_rewards([0, 1], [0.0, 1.0], 2, "log_decay")]
        [0.6309, 0.6309]
    """
    rel = [float(labels[i]) if i is not None else 0.0 for i in list(items)[:n_ranks]]
    rel += [0.0] * (n_ranks - len(rel))
    if mode == "exp_inf":
        return rel
    if mode != "log_decay":
        raise ValueError(f"rank_rewards: mode must be exp_inf or log_decay, got {mode!r}")
    disc = [r / math.log2(j + 2) for j, r in enumerate(rel)]
    return [sum(disc[k:]) for k in range(n_ranks)]


def rank_advantages(
    rewards: Tensor, num_generations: int, scale: Literal["group", "batch", "none"] | bool = "group", eps: float = 1e-4
) -> Tensor:
    """Advantage of each rank: its reward minus the mean over the G samples of the same prompt, scaled.

    Formula: Â_{g,k} = (r_{g,k} − mean_g r_{·,k}) / (σ_k + 1e-4), with σ_k (unbiased, as TRL) by ``scale``:
        ``"group"`` (or True): std over the G samples of the prompt, per rank;
        ``"batch"``: std over every sample of the batch, per rank;
        ``"none"`` (or False): no division (Dr. GRPO), Â = r − mean.
    The names and meanings are TRL's ``GRPOConfig.scale_rewards``, applied per rank.

    Shapes: ``rewards: (B, N)`` with ``B = prompts × G`` (a prompt's samples consecutive); returns ``(B, N)``.

    Example:
        >>> rank_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 2).round(decimals=3)
        tensor([[ 0.7070,  0.0000],
                [-0.7070,  0.0000]])
        >>> rank_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 2, scale="none")
        tensor([[ 0.5000,  0.0000],
                [-0.5000,  0.0000]])
    """
    scale = {True: "group", False: "none"}.get(scale, scale)  # type: ignore[arg-type]
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"rank_advantages: scale must be group, batch or none, got {scale!r}")
    grouped = rewards.view(-1, num_generations, rewards.shape[-1])  # (P, G, N)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (P, G, N)
    if scale == "none":
        return centred.view_as(rewards)
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(grouped[:, :1])
    else:
        std = rewards.std(dim=0).view(1, 1, -1) if rewards.shape[0] > 1 else torch.zeros_like(grouped[:1, :1])
    return (centred / (std + eps)).view_as(rewards)


def token_rank_index(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[int]:
    """0-based rank (item line) each completion token belongs to; −1 for tokens on a blank line.

    Lines are segmented exactly as :func:`parse_ranked_lines` does (blank lines are not items), so the
    k-th parsed item and the tokens of rank k are the same line. A token belongs to the line it starts
    on: the token holding the newline that ends an item belongs to that item. Special tokens decode
    to nothing, as in the parser's ``skip_special_tokens`` text.

    Example:
        >>> from rankwise.rankers.llm import tiny_causal_lm
        >>> _, tok = tiny_causal_lm(["[1]\\n[2]\\n"], vocab_size=270)
        >>> ids = [tok.convert_tokens_to_ids(t) for t in ["[", "1", "]", "Ċ", "Ċ", "[", "2", "]"]]
        >>> token_rank_index(tok, ids)
        [0, 0, 0, 0, -1, 1, 1, 1]
    """
    pieces = [tokenizer.decode([tok], skip_special_tokens=True) for tok in ids]
    line_rank = _line_ranks("".join(pieces))
    out, line = [], 0
    for piece in pieces:
        out.append(line_rank[line])
        line += piece.count("\n")
    return out


def rank_grpo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    rank_index: Tensor,
    mask: Tensor,
    n_ranks: int,
    epsilon_low: float = 0.06,
    epsilon_high: float = 0.08,
    beta: float = 0.0,
    ref_logps: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The Rank-GRPO loss: clipped surrogate with one importance ratio per rank, plus KL (k3).

    Formula:
        w_k = exp(mean_{t ∈ rank k} (log π_θ(t) − log π_old(t)))  (geometric mean of token ratios);
        tokens outside ranks 0..N−1 (``rank_index = −1``: text after item N, EOS) use their own ratio.
        ℓ_t = −min(w_{k(t)} Â_t, clip(w_{k(t)}, 1 − ε_low, 1 + ε_high) Â_t) + β (e^{ref−logp} − (ref − logp) − 1)
        loss = Σ_t mask_t ℓ_t / Σ_t mask_t  (mean over all completion tokens of the batch).

    Args:
        epsilon_low, epsilon_high: asymmetric clip range (paper: 0.06 / 0.08).
        beta: KL weight (paper: 1e-3); needs ``ref_logps``.

    Shapes:
        ``logps, old_logps, advantages, mask, ref_logps: (B, T)``; ``rank_index: (B, T)`` long in
        ``[-1, N)``; returns ``(loss (), ratio (B, T))`` with ``ratio`` the per-token w used.
    """
    log_ratio = logps - old_logps  # (B, T)
    in_rank = (rank_index >= 0) & mask.bool()  # (B, T)
    bucket = torch.where(in_rank, rank_index, torch.full_like(rank_index, n_ranks))  # (B, T), N = spare bucket
    sums = torch.zeros(logps.shape[0], n_ranks + 1, dtype=logps.dtype, device=logps.device)
    counts = torch.zeros_like(sums)
    sums = sums.scatter_add(1, bucket, log_ratio * in_rank)  # (B, N+1)
    counts = counts.scatter_add(1, bucket, in_rank.to(logps.dtype))
    rank_log_ratio = sums / counts.clamp_min(1.0)  # (B, N+1)
    tok_log_ratio = torch.where(in_rank, rank_log_ratio.gather(1, bucket), log_ratio)  # (B, T)
    ratio = torch.exp(tok_log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)  # (B, T)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("rank_grpo_loss: beta > 0 needs ref_logps")
        diff = ref_logps - logps
        per_token = per_token + beta * (torch.exp(diff) - diff - 1)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0), ratio


def rank_ndcg_reward(prompts: Sequence[Any], completions: Sequence[Any], labels: Sequence[Sequence[float]], **kwargs: Any) -> list[float]:
    """Sequence-level reward: NDCG of the ranked lines against the labels (invalid/repeated lines gain 0).

    Formula: DCG = Σ_{k ≤ n} rel_k / log2(k + 1) over the first n = len(labels) lines; NDCG = DCG / IDCG
    (linear gain, as :func:`rank_rewards`). Plain GRPO trains on this; Rank-GRPO logs it.

    Example:
        >>> [round(r, 4) for r in rank_ndcg_reward(["p", "p"], ["[2]\\n[1]", "[1]\\n[2]"], labels=[[0, 1], [0, 1]])]
        [1.0, 0.6309]
    """
    out = []
    for c, labs in zip(completions, labels):
        items = parse_ranked_lines(completion_text(c), len(labs))[: len(labs)]
        dcg = sum(float(labs[i]) / math.log2(k + 2) for k, i in enumerate(items) if i is not None)
        ideal = sum(r / math.log2(k + 2) for k, r in enumerate(sorted(map(float, labs), reverse=True)))
        out.append(dcg / ideal if ideal > 0 else 0.0)
    return out


@dataclass
class RankGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus Rank-GRPO's knobs; defaults are the paper's clip range and KL weight.

    Args:
        n_ranks: items expected in a completion (N; the paper: 20). ``None``: each row's ``len(labels)``.
        rank_reward: ``"exp_inf"`` (default, the rank's own relevance; the authors' default) or
            ``"log_decay"`` (DCG from rank k on).
        length_penalty: shaping on tokens past item N (−), and on EOS after exactly N (+) / fewer (−) items.
    """

    n_ranks: int | None = field(default=None, metadata={"help": "Items per completion (None: len(labels))."})
    rank_reward: str = field(default="exp_inf", metadata={"help": "exp_inf (the rank's relevance) or log_decay (DCG from the rank on)."})
    length_penalty: float = field(default=0.1, metadata={"help": "Length shaping magnitude."})
    epsilon: float = field(default=0.06, metadata={"help": "Lower clip (1 - epsilon)."})
    epsilon_high: float | None = field(default=0.08, metadata={"help": "Upper clip (1 + epsilon_high)."})
    beta: float = field(default=1e-3, metadata={"help": "KL weight (k3 estimator) to the reference policy."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank_reward not in ("log_decay", "exp_inf"):
            raise ValueError(f"RankGRPOConfig: rank_reward must be log_decay or exp_inf, got {self.rank_reward!r}")


class RankGRPOTrainer(GRPOTrainer):
    """GRPO where each rank of a listed completion gets its own advantage and importance ratio.

    Formula:
        per-rank rewards (:func:`rank_rewards`) → per-rank advantages across the G samples
        (:func:`rank_advantages`) broadcast to the item's tokens → :func:`rank_grpo_loss`.

    Paper:
        Rank-GRPO: Training LLM-based Conversational Recommender Systems with Reinforcement Learning
        (Zhu et al., 2025), https://arxiv.org/abs/2510.20150. Differences from the paper: items are
        passage ids of a ranking prompt rather than movie titles; the loss is averaged over all
        completion tokens of the batch. TRL options that act inside its own ``_compute_loss``
        (``loss_type``, entropy masking, vLLM importance-sampling correction) do not apply here;
        ``scale_rewards`` does, per rank (:func:`rank_advantages`). The overridden hooks follow TRL
        1.16's private API (``_get_per_token_logps_and_entropies`` returns three values since 1.7):
        ``pyproject.toml`` pins the TRL range and ``tests/test_rank_grpo.py`` calls the hooks.

    Args:
        reward_funcs: TRL reward functions; they are only logged (the advantage comes from the ranks).
            Defaults to :func:`rank_ndcg_reward`.
        args: a :class:`RankGRPOConfig`. Everything else as ``GRPOTrainer``.

    Example:
        >>> trainer = RankGRPOTrainer(model, args=RankGRPOConfig(output_dir="out"), train_dataset=rows,
        ...                           processing_class=tokenizer)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model, reward_funcs=None, args: RankGRPOConfig | None = None, **kwargs) -> None:
        if args is None:
            args = RankGRPOConfig(output_dir="rank-grpo-out")
        if not isinstance(args, RankGRPOConfig):
            raise TypeError(f"RankGRPOTrainer: args must be a RankGRPOConfig, got {type(args).__name__}")
        super().__init__(model, reward_funcs=reward_funcs or [rank_ndcg_reward], args=args, **kwargs)

    def _rank_targets(self, inputs: list[dict], completion_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token advantages ``(B, T)`` and rank index ``(B, T)`` (−1 outside the N ranks).

        Tokens on blank lines belong to no rank (index −1, advantage 0), as the parser skips them;
        rank advantages are scaled as ``args.scale_rewards`` says (see :func:`rank_advantages`).
        """
        args: RankGRPOConfig = self.args
        tok = self.processing_class
        eos = tok.eos_token_id
        texts = tok.batch_decode(completion_ids, skip_special_tokens=True)
        n_ranks = args.n_ranks or max(len(x["labels"]) for x in inputs)
        items = [parse_ranked_lines(t, len(x["labels"])) for t, x in zip(texts, inputs)]
        rewards = torch.tensor([rank_rewards(it, x["labels"], n_ranks, args.rank_reward) for it, x in zip(items, inputs)])
        adv_rank = rank_advantages(rewards, self.num_generations, args.scale_rewards)  # (B, N)
        B, T = completion_ids.shape
        advantages = torch.zeros(B, T)
        rank_index = torch.full((B, T), -1, dtype=torch.long)
        for b in range(B):
            ids = completion_ids[b].tolist()
            n_items = len(items[b])
            for t, k in enumerate(token_rank_index(tok, ids)):
                if not completion_mask[b, t]:
                    break
                if ids[t] == eos:
                    advantages[b, t] = args.length_penalty if n_items == n_ranks else -args.length_penalty
                elif k < 0:
                    continue  # a blank line: no item, no credit
                elif k >= n_ranks:
                    advantages[b, t] = -args.length_penalty
                else:
                    advantages[b, t] = adv_rank[b, k]
                    rank_index[b, t] = k
        device = completion_ids.device
        return advantages.to(device), rank_index.to(device)

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        output["advantages"], output["rank_index"] = self._rank_targets(
            inputs, output["completion_ids"], output["completion_mask"]
        )
        return output

    def _compute_loss(self, model, inputs: dict[str, Any]) -> Tensor:
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, completion_ids.size(1))
        old = inputs.get("old_per_token_logps")
        loss, ratio = rank_grpo_loss(
            logps,
            logps.detach() if old is None else old,
            inputs["advantages"],
            inputs["rank_index"],
            inputs["completion_mask"],
            n_ranks=int(inputs["rank_index"].max().clamp_min(0)) + 1,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            beta=self.beta,
            ref_logps=inputs.get("ref_per_token_logps"),
        )
        mode = "train" if self.model.training else "eval"
        valid = inputs["completion_mask"].bool()
        self._metrics[mode]["rank_ratio_mean"].append(ratio[valid].mean().item())
        if self.beta != 0.0:
            diff = (inputs["ref_per_token_logps"] - logps).detach()
            self._metrics[mode]["kl"].append((torch.exp(diff) - diff - 1)[valid].mean().item())
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        return loss / normalizer
