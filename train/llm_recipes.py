"""Training recipes for the LLM rankers: one function per ranker, one config for what they share.

Each recipe reads training lists (positives + BM25 hard negatives) from a BEIR train split, builds
the trainer the method calls for and saves a rankwise model directory:

* :func:`train_erank` — ERank: SFT on 0-10 integer targets (optional curriculum), or GRPO with the
  list-derived reward (``train/grpo/erank_reward.py``), on TRL;
* :func:`train_listwise` — the listwise permutation ranker with LiPO-λ against a frozen reference
  (``train/listwise_lipo.py``);
* :func:`train_iranker` — IRanker's elimination step with GRPO (step + format rewards);
* :func:`train_rank_grpo` — Rank-GRPO (``train/grpo/rank_grpo.py``), rank-level credit.

:class:`Placement` maps ``device`` / ``dtype`` onto TRL/transformers: bf16 is mixed precision over
fp32 weights on CUDA and on the CPU (autocast; CPUs with AMX run bf16 matmuls several times faster
than fp32), fp16 is mixed precision on CUDA and fp16 weights on the CPU.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LLMTrainConfig", "Placement", "training_lists", "train_erank", "train_listwise", "train_iranker", "train_rank_grpo"]


@dataclass
class LLMTrainConfig:
    """What every LLM-ranker recipe shares.

    Attributes:
        backbone: causal LM folder or hub id (or a rankwise LLM ranker folder).
        output: the model directory to write.
        dataset: BEIR dataset name or folder with ``qrels/train.tsv``; ``data_dir``: where names live.
        queries: training lists; ``list_size``: documents per list; ``max_steps``; ``lr``; ``seed``.
        device: ``auto`` / ``cuda`` / ``cpu``; ``dtype``: ``fp32`` / ``bf16`` / ``fp16``.
        max_doc_tokens: passages are cut to this many tokens (ERank: ``4 *`` as characters).
        generations: GRPO samples per prompt.
    """

    backbone: str
    output: Path
    dataset: str = "scifact"
    data_dir: Path | None = None
    queries: int = 64
    list_size: int = 8
    max_steps: int = 100
    lr: float = 1e-5
    seed: int = 0
    device: str = "auto"
    dtype: str = "fp32"
    max_doc_tokens: int = 64
    generations: int = 4


class Placement:
    """Device and precision of one training run, mapped onto TRL/transformers arguments.

    Half-precision weights are never trained in place with bf16: an AdamW step of size ``lr`` (1e-5)
    is below half the bf16 spacing of a typical weight (2^-8 of its magnitude, ~8e-5 at 0.02), so
    it rounds away and the model does not move. bf16 therefore means fp32 master weights under
    autocast on every device (``mixed``); fp16 stays mixed precision on CUDA only (fp16 autocast
    on the CPU is slow and needs loss scaling), so on the CPU the weights are loaded in fp16.
    """

    def __init__(self, device: str, dtype: str) -> None:
        import torch

        from rankwise.core.device import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.cuda = self.device.type == "cuda"
        self.mixed = self.dtype == torch.bfloat16 or (self.cuda and self.dtype == torch.float16)
        self.load_dtype = torch.float32 if self.mixed else self.dtype

    def trainer_args(self) -> dict[str, bool]:
        """``use_cpu``, ``bf16``, ``fp16`` for a ``TrainingArguments`` subclass."""
        import torch

        return {"use_cpu": not self.cuda, "bf16": self.mixed and self.dtype == torch.bfloat16,
                "fp16": self.mixed and self.dtype == torch.float16}

    def autocast(self):  # noqa: ANN201 - a context manager
        """Autocast to the dtype on the device when mixed, else a no-op context."""
        import torch

        return torch.autocast(self.device.type, dtype=self.dtype) if self.mixed else contextlib.nullcontext()

    def model_init_kwargs(self) -> dict[str, str]:
        """How TRL loads a model given by path (``GRPOConfig.model_init_kwargs``)."""
        return {"dtype": str(self.load_dtype).removeprefix("torch.")}


def training_lists(cfg: LLMTrainConfig) -> list:
    """``cfg.queries`` training lists (positives + BM25 hard negatives from the top 30) of the train split."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever
    from rankwise.train.data import HardNegativeLists

    ds = load_beir(cfg.dataset, "train", data_dir=cfg.data_dir, download=False)
    bm25 = BM25Retriever.from_corpus({d: ds.doc_text(d) for d in ds.corpus})
    stream = HardNegativeLists(ds.queries, ds.qrels, ds.doc_text, bm25.search, list_size=cfg.list_size, negatives_from=30, seed=cfg.seed)
    out = []
    for item in stream:
        out.append(item)
        if len(out) >= cfg.queries:
            break
    return out


def _grpo_args(config_cls: Any, cfg: LLMTrainConfig, place: Placement, batch: int, completion: int, **kw: Any) -> Any:
    return config_cls(
        **place.trainer_args(), model_init_kwargs=place.model_init_kwargs(),
        output_dir=str(cfg.output / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.lr, num_generations=cfg.generations,
        per_device_train_batch_size=batch, max_completion_length=completion, logging_steps=max(1, cfg.max_steps // 20),
        save_strategy="no", report_to="none", seed=cfg.seed, **kw,
    )


def train_erank(cfg: LLMTrainConfig, stage: str = "sft", curriculum_m: int = 0, max_doc_chars: int = 800,
                teacher: str | None = None, teacher_scale: str = "list") -> Path:
    """ERank: ``stage="sft"`` (0-10 integer targets; BM25 reciprocal-rank curriculum over
    ``curriculum_m`` steps when > 0) or ``"grpo"`` (list reward + format reward). ``teacher``: a
    reranker (``bi-encoder``, a model directory, an ONNX export) whose scores, mapped to [0, 1] by
    ``teacher_scale`` (``list`` min-max or ``platt``; :func:`train.sft.teacher_scores`), become the
    targets of the negatives (judged positives keep their qrels grade)."""
    from datasets import Dataset

    from rankwise.rankers.erank import ERankRanker, erank_prompt
    from rankwise.rankers.llm import load_causal_lm
    from rankwise.train.sft import CurriculumSFTConfig, erank_sft_examples, graded_target, train_sft

    place = Placement(cfg.device, cfg.dtype)
    lists = training_lists(cfg)
    model, tok = load_causal_lm(cfg.backbone, dtype=place.load_dtype)
    if stage == "sft":
        queries = {t.qid: t.query for t in lists}
        items = {t.qid: list(zip(t.docs, t.labels, t.first_stage_ranks)) for t in lists}
        scores = None
        if teacher is not None:
            from rankwise.eval.pipeline import load_reranker
            from rankwise.train.sft import teacher_scores

            scores = teacher_scores(queries, items, load_reranker(teacher, device=cfg.device)[0], teacher_scale)
        rows = erank_sft_examples(tok, queries, items, max_label=max(max(t.labels) for t in lists), teacher=scores,
                                  max_doc_chars=max_doc_chars)
        sft_cfg = CurriculumSFTConfig(
            output_dir=str(cfg.output / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.lr, per_device_train_batch_size=8,
            save_strategy="no", report_to="none", seed=cfg.seed, logging_steps=max(1, cfg.max_steps // 20),
            curriculum_m=curriculum_m or None, **place.trainer_args(),
        )
        trainer = train_sft(model, tok, rows, sft_cfg)
    elif stage == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from rankwise.train.grpo.erank_reward import erank_format_reward, erank_list_reward

        top = max(max(t.labels) for t in lists)
        rows = [{"prompt": erank_prompt(tok, t.query, d[:max_doc_chars]), "qid": t.qid, "label": graded_target(y, top)}
                for t in lists for d, y in zip(t.docs, t.labels)]
        args = _grpo_args(GRPOConfig, cfg, place, cfg.list_size * cfg.generations, 8, shuffle_dataset=False)
        trainer = GRPOTrainer(cfg.backbone, reward_funcs=[erank_list_reward, erank_format_reward],
                              train_dataset=Dataset.from_list(rows), processing_class=tok, args=args)
        trainer.train()
    else:
        raise ValueError(f"train_erank: stage {stage!r} is not 'sft' or 'grpo'")
    ERankRanker(trainer.model, tok, readout="integer").save_pretrained(cfg.output, backbone=str(cfg.backbone), stage=stage)
    return cfg.output


def train_listwise(cfg: LLMTrainConfig, responses: int = 8, beta: float = 0.05,
                   log: Callable[[int, float], None] | None = None) -> Path:
    """The listwise ranker with LiPO-λ: one list per step, ``responses`` permutations graded by NDCG."""
    from rankwise.rankers.listwise import ListwiseRanker
    from rankwise.train.listwise_lipo import ListwiseLiPOConfig, ListwiseLiPOTrainer

    place = Placement(cfg.device, cfg.dtype)
    lists = training_lists(cfg)
    ranker = ListwiseRanker.from_pretrained(cfg.backbone, dtype=place.load_dtype, device=place.device, window=cfg.list_size,
                                            stride=max(1, cfg.list_size // 2), max_doc_tokens=cfg.max_doc_tokens)
    trainer = ListwiseLiPOTrainer(ranker, ListwiseLiPOConfig(beta=beta, responses=responses, learning_rate=cfg.lr,
                                                             max_doc_tokens=cfg.max_doc_tokens, seed=cfg.seed))
    for step in range(cfg.max_steps):
        t = lists[step % len(lists)]
        with place.autocast():
            loss = trainer.step([(t.query, list(t.docs), list(t.labels))])
        if log is not None and step % max(1, cfg.max_steps // 20) == 0:
            log(step, loss)
    ranker.save_pretrained(cfg.output, backbone=str(cfg.backbone))
    return cfg.output


def train_iranker(cfg: LLMTrainConfig) -> Path:
    """IRanker's single elimination step with GRPO (every elimination state is one sample)."""
    if cfg.list_size > 26:
        raise ValueError(f"train_iranker: list_size {cfg.list_size}: IRanker pools hold at most 26 candidates")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rankwise.rankers.iranker import IRanker
    from rankwise.rankers.llm import load_causal_lm, truncate_text
    from rankwise.train.grpo.iranker import iranker_format_reward, iranker_states, iranker_step_reward

    place = Placement(cfg.device, cfg.dtype)
    lists = training_lists(cfg)
    _, tok = load_causal_lm(cfg.backbone)
    rng = random.Random(cfg.seed)
    rows = [row for t in lists
            for row in iranker_states(tok, t.query, [truncate_text(tok, d, cfg.max_doc_tokens) for d in t.docs], t.labels, rng)]
    args = _grpo_args(GRPOConfig, cfg, place, 2 * cfg.generations, 6, beta=1e-3)
    trainer = GRPOTrainer(cfg.backbone, reward_funcs=[iranker_step_reward, iranker_format_reward],
                          train_dataset=Dataset.from_list(rows), processing_class=tok, args=args)
    trainer.train()
    IRanker(trainer.model, tok, max_doc_tokens=cfg.max_doc_tokens).save_pretrained(cfg.output, backbone=str(cfg.backbone))
    return cfg.output


def train_rank_grpo(cfg: LLMTrainConfig, rank_reward: str = "exp_inf") -> Path:
    """Rank-GRPO: one passage id per line, per-rank reward and advantage."""
    from datasets import Dataset

    from rankwise.rankers.listwise import ListwiseRanker, listwise_prompt
    from rankwise.rankers.llm import load_causal_lm, truncate_text
    from rankwise.train.grpo.rank_grpo import RankGRPOConfig, RankGRPOTrainer

    place = Placement(cfg.device, cfg.dtype)
    lists = training_lists(cfg)
    _, tok = load_causal_lm(cfg.backbone)
    rows = [{"prompt": listwise_prompt(tok, t.query, [truncate_text(tok, d, cfg.max_doc_tokens) for d in t.docs], "lines"),
             "labels": list(t.labels)} for t in lists]
    args = _grpo_args(RankGRPOConfig, cfg, place, cfg.generations, 6 * cfg.list_size, n_ranks=cfg.list_size, rank_reward=rank_reward)
    trainer = RankGRPOTrainer(cfg.backbone, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    ListwiseRanker(trainer.model, tok, window=cfg.list_size, stride=max(1, cfg.list_size // 2), max_doc_tokens=cfg.max_doc_tokens,
                   answer="lines").save_pretrained(cfg.output, backbone=str(cfg.backbone))
    return cfg.output
