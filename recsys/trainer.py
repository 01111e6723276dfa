"""Training loop shared by every sequential recommender: AdamW, windows, validation, time budget."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from rankwise.recsys._seq import SequentialRecommender
from rankwise.recsys.data import SequenceData, iter_train_batches, train_windows
from rankwise.recsys.evaluate import evaluate_full_ranking

__all__ = ["RecTrainerConfig", "RecTrainer"]


@dataclass
class RecTrainerConfig:
    """How to train a recommender.

    Args:
        epochs: passes over the training windows.
        batch_size: windows per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        windows: ``"last"`` = most recent ``max_len`` items per user (SASRec/HSTU), ``"all"`` = the whole
            training history cut into windows (more positions per epoch, slower epochs).
        scheduler: ``"constant"`` or ``"cosine"`` (with ``warmup_ratio`` linear warm-up; HLLM uses 10%).
        warmup_ratio: fraction of steps with linear warm-up (cosine schedule only).
        eval_every: validate every N epochs and keep the best weights by validation NDCG@10 (0 = never).
        max_minutes: stop after the epoch in which this wall-clock budget is exceeded (None = no limit).
        grad_clip: gradient-norm clip (0 = off; the HSTU authors' trainer does not clip).
        adam_beta2: AdamW β₂ (the HSTU authors use 0.98).
        seed: seeds torch and the window shuffling.
        progress: show a rich progress bar.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    windows: Literal["last", "all"] = "last"
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_ratio: float = 0.0
    eval_every: int = 0
    max_minutes: float | None = None
    grad_clip: float = 1.0
    adam_beta2: float = 0.999
    seed: int = 42
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"RecTrainerConfig: epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        if self.windows not in ("last", "all"):
            raise ValueError(f"RecTrainerConfig: windows must be 'last' or 'all', got {self.windows!r}")
        if self.scheduler not in ("constant", "cosine"):
            raise ValueError(f"RecTrainerConfig: scheduler must be 'constant' or 'cosine', got {self.scheduler!r}")


@dataclass
class TrainLog:
    """What a training run did: epochs, seconds, mean loss per epoch, validation metrics per check."""

    epochs: int = 0
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    valid: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


class RecTrainer:
    """Train any :class:`recsys._seq.SequentialRecommender` on a :class:`recsys.data.SequenceData`.

    Each step calls ``model.calculate_loss(batch)`` with ``item_seq``/``target`` ``(B, L)`` and ``epoch``;
    batches are moved to the device of the model's parameters (move the model first to train on a GPU).

    Example:
        >>> trainer = RecTrainer(model, data, RecTrainerConfig(epochs=1))  # doctest: +SKIP
        >>> log = trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: SequentialRecommender, data: SequenceData, config: RecTrainerConfig | None = None) -> None:
        self.model, self.data = model, data
        self.config = config if config is not None else RecTrainerConfig()

    def train(self) -> TrainLog:
        cfg, model = self.config, self.model
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        windows = train_windows(self.data.history("train"), model.config.max_len, cfg.windows)
        if not windows:
            raise ValueError(f"{self.data.name}: no training windows (every user has fewer than 4 interactions)")
        groups = model.optimizer_groups(cfg.lr)
        params = [p for g in groups for p in g["params"]]
        device = params[0].device
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2))
        steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        warm = int(cfg.warmup_ratio * total)

        def factor(step: int) -> float:
            if cfg.scheduler == "constant":
                return 1.0
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        log, best_state, best = TrainLog(), None, -1.0
        start = time.perf_counter()
        from rich.progress import Progress

        with Progress(disable=not cfg.progress, transient=True) as bar:
            task = bar.add_task(f"train {model.kind}", total=total)
            for epoch in range(cfg.epochs):
                model.train()
                losses = []
                for batch in iter_train_batches(windows, cfg.batch_size, model.config.max_len, rng):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    batch["epoch"] = epoch
                    loss = model.calculate_loss(batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    sched.step()
                    losses.append(loss.item())
                    bar.update(task, advance=1, description=f"train {model.kind} epoch {epoch + 1} loss {losses[-1]:.4f}")
                log.epochs, log.losses = epoch + 1, [*log.losses, float(np.mean(losses))]
                if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
                    metrics = evaluate_full_ranking(model, self.data, "valid")
                    metrics["epoch"] = epoch + 1
                    log.valid.append(metrics)
                    if metrics["ndcg@10"] > best:
                        best, log.best_epoch = metrics["ndcg@10"], epoch + 1
                        best_state = copy.deepcopy(model.state_dict())
                if cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes:
                    break
        log.train_s = time.perf_counter() - start
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return log
