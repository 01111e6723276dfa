"""Fine-tune a reranker (cross-encoder, or the scaled-cosine bi-encoder) with any ranking objective.

A plain PyTorch loop, kept small: lists from :mod:`train.data` -> scores ``(B, L)`` from the model ->
an objective from :mod:`train.losses` (optionally weighted by :mod:`train.curriculum`) -> AdamW with
linear warm-up, then linear decay to 0 over the steps the run will actually take (``max_steps``, or
fewer when the list stream ends first), and gradient clipping. Checkpoints are ``save_pretrained``
directories with ``rankwise.json`` plus ``trainer_state.pt`` (optimiser, scheduler, step), each
written aside and renamed into place, so a run resumes exactly and never from a half-written checkpoint.

Training to convergence: given an ``evaluator`` (e.g. :func:`rankwise.train.dev_eval.dev_ndcg_evaluator`, nDCG@10 on held-out
train queries) and ``eval_steps``, the trainer scores the model at step 0 and every ``eval_steps``
steps, keeps the best weights in ``output_dir/best``, stops once ``patience`` evaluations in a row
fail to improve by ``min_delta``, and saves the best weights as the final model. The curve is in
the summary (``curve``) and in ``training_log.json``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rankwise.core.outputs import atomic_dir
from rankwise.train.curriculum import HEURISTICS, CurriculumSchedule, curriculum_weights
from rankwise.train.data import ListBatch, TrainingList, collate_lists
from rankwise.train.losses import OBJECTIVES, RankingLoss, make_objective
from rankwise.train.quantization_aware import simulate_onnx_int8

__all__ = ["CrossEncoderTrainerConfig", "CrossEncoderTrainer", "TrainableRanker", "ARCHITECTURES", "load_trainable", "train_on_beir"]

STATE_FILE = "trainer_state.pt"
BEST_DIR = "best"
PAIRWISE = ("ranknet", "lambdaloss", "lipo", "ranklist")


class TrainableRanker(Protocol):
    """What the trainer needs from a model: ``CrossEncoder`` and ``TrainableBiEncoder`` both fit."""

    model: nn.Module

    def logits(self, queries: list[str], docs: list[str]) -> torch.Tensor: ...

    def save_pretrained(self, directory: str | Path, **extra: Any) -> None: ...


@dataclass
class CrossEncoderTrainerConfig:
    """Settings of one training run.

    Attributes:
        output_dir: final model directory; checkpoints go to ``output_dir/checkpoint-<step>``.
        objective: one of :data:`train.losses.OBJECTIVES`.
        objective_kwargs: the objective's knobs (e.g. ``{"weighting": "none"}`` for LiPO).
        max_steps: optimiser steps (one step = ``lists_per_step`` lists).
        lists_per_step: lists (queries) per step; raise for smoother listwise gradients.
        learning_rate: peak AdamW learning rate (2e-5 suits MiniLM-sized encoders).
        weight_decay: AdamW weight decay (not applied to biases, LayerNorm and the scale).
        warmup_ratio: fraction of ``max_steps`` with a linear warm-up, then linear decay to 0.
        max_grad_norm: gradient clipping norm (``0`` disables).
        curriculum: ``None`` or a :data:`train.curriculum.HEURISTICS` name (``bm25-pair`` only for
            pairwise objectives).
        curriculum_fraction: the schedule's ``m`` as a fraction of ``max_steps`` (weights reach 1 there).
        save_steps: checkpoint every so many steps (``0``: only at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        log_every: steps between progress-bar/loss-log updates.
        seed: torch/python seeds (the data stream has its own seed).
        bf16: run the model's forward under bfloat16 autocast (weights and optimiser stay fp32); on a
            GPU this roughly halves the step time, on CPU it needs AVX-512 BF16 to pay off.
        int8_aware: run the model's encoder-layer Linears through the simulation of the int8 ONNX
            export (:func:`train.quantization_aware.simulate_onnx_int8`), for a model to be served
            with ``rankwise export --quantize int8``; usually with ``objective="distill-mse"`` and the
            fp32 model as the trainer's ``teacher``. It simulates this machine's export weight range
            (7-bit on an x86-64 CPU without VNNI), recorded in the model's ``rankwise.json``.
        progress: show a progress bar.
        eval_steps: evaluate the trainer's ``evaluator`` at step 0 and every so many steps (``0``: never).
        patience: stop after this many evaluations in a row without a gain of more than ``min_delta``.
        min_delta: the smallest dev gain that counts as an improvement.
        init_head_bias: for the pointwise objective on a fresh cross-encoder, start the head's bias at
            the logit of the lists' positive rate (measured on the first lists of the stream).
    """

    output_dir: str
    objective: str = "lipo"
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    max_steps: int = 200
    lists_per_step: int = 8
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    curriculum: str | None = None
    curriculum_fraction: float = 0.5
    save_steps: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    bf16: bool = False
    int8_aware: bool = False
    progress: bool = True
    eval_steps: int = 0
    patience: int = 3
    min_delta: float = 0.0
    init_head_bias: bool = True

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"CrossEncoderTrainerConfig.objective: {self.objective!r} is not one of {sorted(OBJECTIVES)}")
        if self.curriculum is not None and self.curriculum not in HEURISTICS:
            raise ValueError(f"CrossEncoderTrainerConfig.curriculum: {self.curriculum!r} is not one of {list(HEURISTICS)}")
        if self.curriculum == "bm25-pair" and self.objective not in PAIRWISE:
            raise ValueError(
                f"CrossEncoderTrainerConfig.curriculum: 'bm25-pair' needs a pairwise objective {list(PAIRWISE)}; "
                f"use 'bm25-rr' or 'bm25-score' with {self.objective!r}"
            )
        if self.max_steps < 1 or self.lists_per_step < 1:
            raise ValueError("CrossEncoderTrainerConfig: max_steps and lists_per_step must be >= 1")
        if self.eval_steps < 0 or self.patience < 1:
            raise ValueError("CrossEncoderTrainerConfig: eval_steps must be >= 0 and patience >= 1")
        if not 0.0 < self.curriculum_fraction <= 1.0:
            raise ValueError(f"CrossEncoderTrainerConfig.curriculum_fraction must be in (0, 1], got {self.curriculum_fraction}")


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    found = [(s, p) for s, p in found if (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


class CrossEncoderTrainer:
    """Train a reranker on a stream of lists with one objective.

    Args:
        model: a :class:`TrainableRanker` (``CrossEncoder`` or ``TrainableBiEncoder``).
        train_lists: an iterable of :class:`train.data.TrainingList` (e.g. ``HardNegativeLists``
            with ``epochs=None``); it must be deterministic for :meth:`train` to resume exactly.
        config: the run's settings (default: ``CrossEncoderTrainerConfig("rankwise-model")``).
        objective: an objective instance (default: built from ``config.objective``).
        teacher: a frozen ranker whose fp32 logits replace the lists' labels (score distillation,
            e.g. ``objective="distill-mse"``); the student then trains without dropout, so that it
            matches the teacher's deterministic scores. ``None``: labels are the qrels.
        evaluator: ``ranker -> dev metric`` (higher is better) for early stopping and best-checkpoint
            selection every ``config.eval_steps`` steps; see :func:`rankwise.train.dev_eval.dev_ndcg_evaluator`.

    Example:
        >>> trainer = CrossEncoderTrainer(ce, lists, CrossEncoderTrainerConfig("out", objective="lipo"))  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: TrainableRanker,
        train_lists: Iterable[TrainingList],
        config: CrossEncoderTrainerConfig | None = None,
        objective: RankingLoss | None = None,
        teacher: TrainableRanker | None = None,
        evaluator: Callable[[TrainableRanker], float] | None = None,
    ) -> None:
        self.ranker = model
        self.evaluator = evaluator
        self.teacher = teacher
        if teacher is not None:
            teacher.model.eval().requires_grad_(False)
        self.train_lists = train_lists
        self.config = config or CrossEncoderTrainerConfig("rankwise-model")
        self.objective = objective or make_objective(self.config.objective, **self.config.objective_kwargs)
        cfg = self.config
        decay, no_decay = [], []
        for name, p in self.ranker.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.dim() < 2 else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate,
        )
        self.total_steps = self.planned_steps(train_lists, cfg)
        total, warmup = self.total_steps, int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1)),
        )
        self.schedule = CurriculumSchedule(max(1, round(cfg.curriculum_fraction * total))) if cfg.curriculum else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.curve: list[dict[str, float]] = []
        self.head_init: dict[str, float] | None = None
        self.best: dict[str, float] | None = None
        self.stale = 0

    @staticmethod
    def planned_steps(train_lists: Iterable[TrainingList], config: CrossEncoderTrainerConfig) -> int:
        """Steps the run will take: ``max_steps``, or fewer when the stream is finite and shorter
        (a sequence of lists, or a stream with ``len()`` lists per epoch and an integer ``epochs``)."""
        available = None
        epochs = getattr(train_lists, "epochs", 1)
        if hasattr(train_lists, "__len__") and epochs is not None:
            available = math.ceil(len(train_lists) * int(epochs) / config.lists_per_step)  # type: ignore[arg-type]
        return max(1, min(config.max_steps, available)) if available is not None else config.max_steps

    def _init_head_bias(self) -> None:
        """Pointwise start: head bias = logit of the positive rate of the stream's first lists."""
        labels = [y for lst in itertools.islice(iter(self.train_lists), 64) for y in lst.labels]
        init = getattr(self.ranker, "init_head_bias", None)
        if labels and init is not None:
            rate = sum(1 for y in labels if y > 0) / len(labels)
            self.head_init = {"head_bias": init(rate), "positive_rate": rate}

    def list_scores(self, batch: ListBatch, ranker: TrainableRanker | None = None) -> torch.Tensor:
        """fp32 scores of ``ranker`` (default: the trained model) for every real candidate, padded
        with 0, on its device.

        Shapes: returns ``(B, L)``.
        """
        ranker = ranker or self.ranker
        queries = [q for q, docs in zip(batch.queries, batch.docs) for _ in docs]
        device = next(ranker.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.config.bf16 and ranker is self.ranker):
            flat = ranker.logits(queries, [d for docs in batch.docs for d in docs])  # (N,)
        scores = torch.zeros(batch.mask.shape, dtype=torch.float32, device=flat.device)
        return scores.masked_scatter(batch.mask.to(flat.device), flat.float())

    def compute_loss(self, batch: ListBatch) -> torch.Tensor:
        """The objective on one batch at the current step (curriculum weights included)."""
        scores = self.list_scores(batch)
        labels, mask = batch.labels.to(scores.device), batch.mask.to(scores.device)
        if self.teacher is not None:
            with torch.inference_mode():
                labels = self.list_scores(batch, self.teacher).to(scores.device)
            labels = labels.clone()  # an ordinary tensor for the objective's autograd graph
        weights = None
        if self.schedule is not None:
            weights = curriculum_weights(
                self.config.curriculum, self.schedule, self.step, labels, mask,
                batch.first_stage_ranks.to(scores.device), batch.first_stage_scores.to(scores.device),
            )
        progress = self.step / self.total_steps
        return self.objective(scores, labels, mask, weights=weights, progress=progress)

    def save_checkpoint(self, directory: Path, with_state: bool = True) -> None:
        """``save_pretrained`` + ``rankwise.json`` (objective, step) (+ optimiser state for resuming)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.ranker.save_pretrained(
            directory, training={**self.objective.get_config_dict(), "curriculum": self.config.curriculum, "step": self.step,
                                 **self._distillation_record()},
        )
        if with_state:
            torch.save(
                {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "history": self.history, "curve": self.curve, "best": self.best, "stale": self.stale},
                directory / STATE_FILE,
            )

    def _save_atomic(self, directory: Path, with_state: bool = True) -> None:
        """:meth:`save_checkpoint` into a staging directory renamed to ``directory`` once complete, so
        a kill never leaves a half-written checkpoint for ``--resume`` to pick up."""
        with atomic_dir(directory) as staging:
            self.save_checkpoint(staging, with_state)

    def _distillation_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if self.config.int8_aware:  # the weight range simulated: export on a machine with the same default
            from rankwise.serving.quantize import int8_weight_levels

            record = {"int8_aware": True, "int8_weight_range": [-int8_weight_levels(), int8_weight_levels()]}
        if self.teacher is not None:
            record["teacher"] = str(getattr(self.teacher.model, "name_or_path", "") or type(self.teacher.model).__name__)
        return record

    def resume(self, checkpoint: Path) -> None:
        """Load optimiser/scheduler/step from ``checkpoint`` (the model must already hold its weights)."""
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.curve = list(state.get("curve", []))
        self.best = state.get("best")
        self.stale = int(state.get("stale", 0))

    def evaluate(self) -> bool:
        """Score the model with the evaluator, log the point, keep the best weights in
        ``output_dir/best``; returns ``True`` when training should stop (patience used up)."""
        was_training = self.ranker.model.training
        self.ranker.model.eval()
        with torch.inference_mode():
            value = float(self.evaluator(self.ranker))  # type: ignore[misc]
        self.ranker.model.train(was_training)
        self.curve.append({"step": self.step, "dev": value})
        if self.best is None or value > self.best["dev"] + self.config.min_delta:
            self.best, self.stale = {"step": self.step, "dev": value}, 0
            self._save_atomic(Path(self.config.output_dir) / BEST_DIR, with_state=False)
        else:
            self.stale += 1
        return self.stale >= self.config.patience

    def _prune(self, out: Path) -> None:
        ckpts = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
        for _, p in ckpts[: max(0, len(ckpts) - self.config.keep_checkpoints)]:
            shutil.rmtree(p, ignore_errors=True)

    def train(self) -> dict[str, Any]:
        """Run to ``max_steps`` (continuing from ``self.step`` after :meth:`resume`); save the final
        model to ``output_dir``. Returns a summary (steps, final loss, seconds, history)."""
        cfg = self.config
        out = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed + self.step)
        random.seed(cfg.seed + self.step)
        np.random.seed(cfg.seed + self.step)
        stream = iter(self.train_lists)
        for _ in range(self.step * cfg.lists_per_step):  # skip what the resumed run has seen
            next(stream)
        self.ranker.model.train(self.teacher is None)  # distillation: no dropout, match the teacher exactly
        simulation = simulate_onnx_int8(self.ranker.model) if cfg.int8_aware else contextlib.nullcontext()
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"train {cfg.objective}", unit="step")
        if self.step == 0 and cfg.init_head_bias and cfg.objective == "pointwise" and self.teacher is None:
            self._init_head_bias()
        evaluating = self.evaluator is not None and cfg.eval_steps > 0
        stopped = False
        if evaluating and not self.curve:
            stopped = self.evaluate()
        start, running = time.perf_counter(), []
        with simulation:  # the int8 simulation ends with the loop, even on an error
            while self.step < self.total_steps and not stopped:
                lists = list(itertools.islice(stream, cfg.lists_per_step))
                if not lists:
                    break
                loss = self.compute_loss(collate_lists(lists))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.ranker.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                running.append(float(loss.detach()))
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self.history.append({"step": self.step, "loss": float(np.mean(running))})
                    running = []
                    if bar is not None:
                        bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}")
                if bar is not None:
                    bar.update(1)
                if evaluating and (self.step % cfg.eval_steps == 0 or self.step == self.total_steps):
                    stopped = self.evaluate()
                    if bar is not None:
                        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", dev=f"{self.curve[-1]['dev']:.4f}")
                if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.total_steps:
                    self._save_atomic(out / f"checkpoint-{self.step}")
                    self._prune(out)
        if bar is not None:
            bar.close()
        if self.best is not None and self.best["step"] != self.step:  # the final model is the best one seen
            self._load_weights(out / BEST_DIR)
        self.ranker.model.eval()
        self.save_checkpoint(out, with_state=False)
        losses = [h["loss"] for h in self.history if "loss" in h]
        summary = {"steps": self.step, "train_s": time.perf_counter() - start, "history": self.history,
                   "final_loss": losses[-1] if losses else math.nan, "curve": self.curve, "best": self.best,
                   "stopped_early": stopped and self.step < self.total_steps, "planned_steps": self.total_steps, "head_init": self.head_init,
                   "config": asdict(cfg)}
        (out / "training_log.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _load_weights(self, directory: Path) -> None:
        """Load the weights of a saved directory of the same ranker class into the trained model."""
        saved = type(self.ranker).from_pretrained(directory)  # type: ignore[attr-defined]
        device = next(self.ranker.model.parameters()).device
        self.ranker.model.load_state_dict({k: v.to(device) for k, v in saved.model.state_dict().items()})

    @staticmethod
    def latest_checkpoint(output_dir: str | Path) -> Path | None:
        """The newest ``checkpoint-<step>`` in ``output_dir`` holding a trainer state, if any."""
        return _latest_checkpoint(Path(output_dir))


ARCHITECTURES = ("cross-encoder", "bi-encoder", "bi-encoder-adapter")


def load_trainable(
    architecture: str,
    name_or_path: str | Path | None,
    max_length: int,
    device: str | torch.device | None = "cpu",
    pooling: str | None = None,
) -> TrainableRanker:
    """A fresh or saved model of ``architecture`` on ``device`` (``auto``: CUDA when available);
    ``None`` starts from the bundled all-MiniLM-L6-v2. ``pooling`` (cross-encoder): ``cls`` or ``mean``."""
    from rankwise.rankers.bi_encoder import default_encoder_path
    from rankwise.core.device import resolve_device

    if architecture == "cross-encoder":
        from rankwise.rankers.cross_encoder import CrossEncoder

        return CrossEncoder.from_pretrained(name_or_path or default_encoder_path(), max_length=max_length, pooling=pooling, device=device)
    if architecture in ("bi-encoder", "bi-encoder-adapter"):
        from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder

        adapter = architecture == "bi-encoder-adapter"
        ranker = TrainableBiEncoder.from_pretrained(name_or_path, max_length=max_length, query_adapter=adapter, train_encoder=not adapter)
        ranker.model.to(resolve_device(device))
        return ranker
    raise ValueError(f"unknown architecture {architecture!r}; choose one of {list(ARCHITECTURES)}")


def train_on_beir(
    dataset: str | Path,
    config: CrossEncoderTrainerConfig,
    model: str | Path | None = None,
    architecture: str = "cross-encoder",
    max_length: int = 256,
    list_size: int = 16,
    negatives_from: int = 100,
    data_dir: str | Path | None = None,
    query_ids: Iterable[str] | None = None,
    resume: bool = False,
    data_seed: int = 0,
    teacher: str | Path | None = None,
    device: str | torch.device | None = "auto",
    pooling: str | None = None,
    dev_fraction: float = 0.0,
    dev_top_k: int = 30,
    dev_max_queries: int | None = None,
) -> dict[str, Any]:
    """Train on a BEIR dataset's ``train`` split with BM25 hard negatives; returns the summary.

    ``query_ids`` restricts training to those queries (e.g. to hold some out); ``resume`` continues
    from the newest checkpoint in ``config.output_dir`` when there is one; ``teacher`` (a saved
    model of the same architecture) makes the labels its logits (score distillation).
    ``dev_fraction > 0`` holds that share of the train queries out (seeded by ``data_seed``) and,
    with ``config.eval_steps``, evaluates nDCG@10 on their BM25 top-``dev_top_k`` for early
    stopping and best-checkpoint selection (on at most ``dev_max_queries`` of them, to bound its cost;
    the others are still held out of training).
    """
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever
    from rankwise.train.data import HardNegativeLists
    from rankwise.train.dev_eval import dev_ndcg_evaluator, split_dev_queries

    ds = load_beir(dataset, "train", data_dir=data_dir)
    bm25 = BM25Retriever.from_corpus({d: ds.doc_text(d) for d in ds.corpus})
    queries = ds.queries if query_ids is None else {q: ds.queries[q] for q in query_ids}
    evaluator = None
    if dev_fraction > 0:
        fit, dev = split_dev_queries({q: ds.qrels[q] for q in queries if q in ds.qrels}, dev_fraction, data_seed)
        candidates = {q: [(h.docid, ds.doc_text(h.docid)) for h in bm25.search(queries[q], dev_top_k)] for q in dev[:dev_max_queries]}
        evaluator = dev_ndcg_evaluator(queries, candidates, ds.qrels)
        queries = {q: queries[q] for q in fit}
    lists = HardNegativeLists(
        queries, ds.qrels, ds.doc_text, lambda q, k: bm25.search(q, k),
        list_size=list_size, negatives_from=negatives_from, epochs=None, seed=data_seed,
    )
    checkpoint = CrossEncoderTrainer.latest_checkpoint(config.output_dir) if resume else None
    ranker = load_trainable(architecture, checkpoint or model, max_length, device=device, pooling=pooling)
    teacher_ranker = load_trainable(architecture, teacher, max_length, device=device) if teacher is not None else None
    trainer = CrossEncoderTrainer(ranker, lists, config, teacher=teacher_ranker, evaluator=evaluator)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    return trainer.train()
