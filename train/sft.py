"""Supervised fine-tuning of LLM rankers on TRL's ``SFTTrainer``, with optional curriculum weights.

ERank's SFT teaches the integer readout: prompt = the ERank prompt, completion = the target
integer 0–10. The same trainer warms up any prompt → completion format (e.g. ranked lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from rankwise.rankers.erank import erank_prompt
from rankwise.train.curriculum import CurriculumSchedule

__all__ = ["teacher_scores", "erank_sft_examples", "graded_target", "CurriculumSFTConfig", "CurriculumSFTTrainer", "train_sft"]


def graded_target(label: float, max_label: float, teacher: float | None = None) -> int:
    """The 0–10 SFT target of one pair.

    Formula: round(10 · label / max_label) from the qrels grade; an unjudged/negative pair with a
    teacher score t ∈ [0, 1] (e.g. a cross-encoder's sigmoid) gets round(10 · t) instead. A judged
    positive always keeps its qrels grade.

    Example:
        >>> graded_target(1, 1), graded_target(0, 1), graded_target(0, 1, teacher=0.34), graded_target(1, 2)
        (10, 0, 3, 5)
    """
    if label > 0 or teacher is None:
        return int(round(10 * float(label) / max(float(max_label), 1e-12)))
    return int(round(10 * min(max(float(teacher), 0.0), 1.0)))


def erank_sft_examples(
    tokenizer: PreTrainedTokenizerBase,
    queries: Mapping[str, str],
    lists: Mapping[str, Sequence[tuple[str, float, int]]],
    max_label: float = 1.0,
    teacher: Mapping[tuple[str, str], float] | None = None,
    max_doc_chars: int = 1000,
) -> list[dict[str, Any]]:
    """Prompt/completion rows for ERank SFT, with each row's curriculum ease.

    Args:
        tokenizer: the backbone's tokenizer (for the chat template).
        queries: ``qid -> query``.
        lists: ``qid -> [(doc_text, label, first_stage_rank), ...]`` (qrels positives + BM25 negatives).
        max_label: the largest qrels grade (mapped to 10).
        teacher: optional ``(qid, doc_text) -> score in [0, 1]`` for negatives.
        max_doc_chars: documents are cut to this many characters.

    Returns:
        rows with ``prompt``, ``completion`` (the integer + EOS) and ``ease`` (reciprocal-rank ease:
        1/r for positives, 1 − 1/r for negatives; MacAvaney et al.).
    """
    rows = []
    eos = tokenizer.eos_token or ""
    for qid, items in lists.items():
        for doc, label, rank in items:
            t = None if teacher is None else teacher.get((qid, doc))
            target = graded_target(label, max_label, t)
            rr = 1.0 / max(int(rank), 1)
            rows.append({
                "prompt": erank_prompt(tokenizer, queries[qid], doc[:max_doc_chars], "integer"),
                "completion": f"{target}{eos}",
                "ease": rr if label > 0 else 1.0 - rr,
            })
    return rows


def teacher_scores(
    queries: Mapping[str, str],
    lists: Mapping[str, Sequence[tuple[str, float, int]]],
    ranker: Any,
    scale: Literal["list", "platt"] = "list",
) -> dict[tuple[str, str], float]:
    """A teacher ranker's scores of every (query, document) of ``lists``, mapped to [0, 1], as
    :func:`erank_sft_examples`'s ``teacher``: the fine-grained 0-10 targets of ERank's recipe come
    from a stronger ranker (e.g. rankwise's cross-encoder or BM25 + bi-encoder fusion) instead of
    only {0, 10} from binary qrels.

    Scales (``s``: the teacher's raw score):
        ``list``:  ``t = (s − min_list s) / (max_list s − min_list s)``: the lowest document of each
            list gets 0 and the highest 1, whatever the teacher's confidence.
        ``platt``: ``t = σ(a · s + b)``, Platt scaling (Platt, 1999) with ``a, b`` fitted by logistic
            regression of the lists' own qrels labels (grade > 0) on ``s``: ``t`` reads as the
            teacher's probability that a document is judged relevant, on one scale for every list.
            The fit sees the lists' positive rate (e.g. 1 in 4), not the corpus's.

    Shapes: ``ranker.score(query, docs) -> (len(docs),)``.
    """
    if scale not in ("list", "platt"):
        raise ValueError(f"teacher_scores: scale must be 'list' or 'platt', got {scale!r}")
    raw = {qid: [float(x) for x in ranker.score(queries[qid], [doc for doc, _, _ in items])]
           for qid, items in lists.items()}
    out: dict[tuple[str, str], float] = {}
    if scale == "platt":
        from sklearn.linear_model import LogisticRegression

        x = np.asarray([s for qid in lists for s in raw[qid]]).reshape(-1, 1)
        y = np.asarray([float(label) > 0 for items in lists.values() for _, label, _ in items])
        if y.all() or not y.any():
            raise ValueError("teacher_scores: Platt scaling needs both judged positives and negatives in the lists")
        fit = LogisticRegression(C=1e6).fit(x, y)
        for qid, items in lists.items():
            probs = fit.predict_proba(np.asarray(raw[qid]).reshape(-1, 1))[:, 1]
            out.update({(qid, doc): float(p) for (doc, _, _), p in zip(items, probs)})
        return out
    for qid, items in lists.items():
        lo, hi = min(raw[qid]), max(raw[qid])
        for (doc, _, _), x in zip(items, raw[qid]):
            out[(qid, doc)] = (x - lo) / (hi - lo) if hi > lo else 0.5
    return out


@dataclass
class CurriculumSFTConfig(SFTConfig):
    """``SFTConfig`` plus the curriculum schedule length (``None``: no curriculum weighting).

    Args:
        curriculum_m: optimiser step at which every sample's weight reaches 1 (MacAvaney et al.'s m).
    """

    curriculum_m: int | None = field(default=None, metadata={"help": "Curriculum length in steps (None: off)."})


class CurriculumSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss reads the vocabulary only where a completion token is trained, with an
    optional per-sample curriculum weight.

    Formula: without a curriculum, TRL's token mean: loss = Σ_{b,t ∈ completion} −log p(x_{b,t+1}) / #tokens.
    With ``curriculum_m`` (and an ``ease`` column): loss = mean_b W_b · (mean over b's completion tokens
    of −log p(token)), W_b = D_b (1 − i/m) + i/m (i = optimiser step) from
    :class:`train.curriculum.CurriculumSchedule` (MacAvaney et al. 2020).

    Difference from TRL: TRL projects every position of the batch onto the vocabulary (its chunked
    log-prob kernel, which has no fast CPU path); ranking completions are a few tokens after a prompt
    of hundreds, so this trainer passes the model ``logits_to_keep`` = the positions that predict a
    completion token in any row of the batch. Shapes: ``input_ids``/``labels`` ``(B, T)``; logits
    ``(B, K, V)`` with K ≪ T. TRL's entropy and token-accuracy metrics are not logged.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        m = getattr(self.args, "curriculum_m", None)
        self._schedule = CurriculumSchedule(m) if m else None
        if self._schedule is not None:
            base = self.data_collator

            def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
                ease = [float(e.pop("ease", 1.0)) for e in examples]
                batch = base(examples)
                batch["ease"] = torch.tensor(ease)
                return batch

            self.data_collator = collate

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if getattr(self.args, "curriculum_m", None) and "ease" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "ease"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ease = inputs.pop("ease", None)
        labels = inputs["labels"][:, 1:]  # (B, T-1): the token each position predicts, -100 off the completion
        keep = (labels != -100).any(0).nonzero().squeeze(1)  # (K,) positions that predict a completion token
        extra = {k: inputs[k] for k in ("position_ids",) if k in inputs}
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False,
                       logits_to_keep=keep, **extra).logits  # (B, K, V)
        target = labels[:, keep]  # (B, K)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=-100, reduction="none")
        valid = (target != -100).float()  # (B, K)
        if ease is None or self._schedule is None:
            count = valid.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (nll * valid).sum() / torch.as_tensor(count, device=nll.device).clamp(min=1)
        else:
            per_sample = (nll * valid).sum(1) / valid.sum(1).clamp_min(1.0)  # (B,)
            weights = self._schedule.weight(ease.to(per_sample.device), self.state.global_step)
            loss = (weights * per_sample).mean()
        return (loss, None) if return_outputs else loss


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    config: CurriculumSFTConfig,
) -> CurriculumSFTTrainer:
    """Fine-tune ``model`` on prompt/completion ``rows`` (plus ``ease`` when curriculum is on); returns the trainer."""
    from datasets import Dataset

    keep = ("prompt", "completion", "ease") if config.curriculum_m else ("prompt", "completion")
    data = Dataset.from_list([{k: r[k] for k in keep} for r in rows])
    trainer = CurriculumSFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    # Mixed precision (TRL's default bf16) leaves accelerate's autocast wrapper as ``model.forward``,
    # bound to this object: a deepcopy of the model would keep running the original's weights.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return trainer
