"""`rankwise train erank|listwise|iranker|rank-grpo ...`: fine-tune LLM rankers on a BEIR train split."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import DataDirOpt, DeviceOpt, OverwriteOpt
from rankwise.train.llm_recipes import LLMTrainConfig

app = typer.Typer(help="Train LLM rankers (ERank, listwise, IRanker, Rank-GRPO).")

DATASET_HELP = "BEIR dataset name (under the data dir) or a BEIR-layout folder with qrels/train.tsv."
BACKBONE_HELP = "Causal LM: an HF folder (e.g. from `rankwise models materialize smollm2`), a rankwise LLM ranker folder, or a hub id."


class ERankStage(str, Enum):
    """ERank training stage."""

    sft = "sft"
    grpo = "grpo"


class TeacherScale(str, Enum):
    """How an ERank SFT teacher's scores map to 0-10 (``train.sft.teacher_scores``)."""

    list = "list"
    platt = "platt"


class RankReward(str, Enum):
    """Rank-GRPO per-rank reward."""

    exp_inf = "exp_inf"
    log_decay = "log_decay"


class DtypeChoice(str, Enum):
    """Training precision."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DTYPE_HELP = (
    "fp32, bf16 or fp16. bf16: mixed precision over fp32 weights on CUDA and CPU (fast on CPUs with AMX); "
    "fp16: mixed precision on CUDA, fp16 weights on CPU."
)
BackboneOpt = Annotated[str, typer.Option("--backbone", help=BACKBONE_HELP)]
DatasetOpt = Annotated[str, typer.Option("--dataset", help=DATASET_HELP)]
DtypeOpt = Annotated[DtypeChoice, typer.Option("--dtype", help=DTYPE_HELP)]
MaxDocTokensOpt = Annotated[int, typer.Option("--max-doc-tokens", min=8, help="Each passage is cut to this many tokens.")]


def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


def _check(backbone: str, output: Path, overwrite: bool) -> None:
    import re

    from rankwise.core.outputs import OutputError, check_output

    if not Path(backbone).exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", backbone):
        _fail(f"--backbone {backbone}: no such folder (give a local folder or an org/name hub id)")
    try:
        check_output(output, overwrite, "dir")
    except OutputError as err:
        _fail(f"--output {err}")


def _config(backbone: str, output: Path, overwrite: bool, dataset: str, data_dir: Optional[Path], device: str,
            dtype: DtypeChoice, **settings) -> LLMTrainConfig:
    """Check the shared flags and gather them (with the command's own) into the recipe's config."""
    _check(backbone, output, overwrite)
    from rankwise.eval.datasets.beir import load_beir

    try:
        load_beir(dataset, "train", data_dir=data_dir, download=False)
    except (OSError, ValueError) as err:
        _fail(f"--dataset {dataset}: {err}")
    return LLMTrainConfig(backbone=backbone, output=output, dataset=dataset, data_dir=data_dir, device=device,
                          dtype=dtype.value, **settings)


def _train_into(cfg: LLMTrainConfig, recipe: Callable[[LLMTrainConfig], Path]) -> None:
    """Run ``recipe`` into a staging directory that becomes ``cfg.output`` once the ranker is saved."""
    from dataclasses import replace

    from rankwise.core.outputs import atomic_dir

    with atomic_dir(cfg.output) as staging:
        recipe(replace(cfg, output=staging))
    typer.echo(f"wrote {cfg.output}")


@app.command("erank")
def erank_cmd(
    backbone: BackboneOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained ERank ranker."),
    stage: ERankStage = typer.Option(ERankStage.sft, "--stage", help="sft: teach the 0-10 integer readout; grpo: RL with the listwise-derived reward (start from an SFT model)."),
    dataset: DatasetOpt = "scifact",
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(4, "--list-size", min=2, help="Documents per query: positives + BM25 hard negatives."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="Optimiser steps."),
    lr: float = typer.Option(1e-5, "--lr", help="Learning rate."),
    curriculum_m: int = typer.Option(0, "--curriculum-m", min=0, help="SFT curriculum length in steps (BM25 reciprocal-rank ease; 0: off)."),
    generations: int = typer.Option(4, "--generations", min=2, help="GRPO samples per prompt."),
    max_doc_chars: int = typer.Option(800, "--max-doc-chars", min=50, help="Documents are cut to this many characters."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="SFT: a reranker ('bi-encoder', a model directory or ONNX export) whose scores grade the negatives 0-10."),
    teacher_scale: TeacherScale = typer.Option(TeacherScale.list, "--teacher-scale", help="How --teacher's scores map to 0-10: list (min-max within each list) or platt (one logistic fit to the lists' labels)."),
    data_dir: DataDirOpt = None,
    seed: int = typer.Option(0, "--seed", help="Seed for lists and training."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.fp32,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune an ERank pointwise ranker: SFT on 0-10 targets, then optionally GRPO.

    Examples:
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --max-steps 200
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --curriculum-m 50
        rankwise train erank --backbone models/smollm2 --output models/erank-teacher --teacher bi-encoder
        rankwise train erank --backbone models/smollm2 --output models/erank-teacher --teacher models/ce --teacher-scale platt
        rankwise train erank --stage grpo --backbone models/erank-sft --output models/erank-rl --max-steps 50
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --device cuda --dtype bf16
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --overwrite
    """
    from rankwise.train.llm_recipes import train_erank

    cfg = _config(backbone, output, overwrite, dataset, data_dir, device, dtype, queries=queries, list_size=list_size, max_steps=max_steps,
                  lr=lr, seed=seed, generations=generations)
    if teacher is not None and (stage is not ERankStage.sft or (teacher != "bi-encoder" and not Path(teacher).is_dir())):
        _fail(f"--teacher {teacher}: SFT only, and 'bi-encoder' or a model directory")
    _train_into(cfg, lambda c: train_erank(c, stage.value, curriculum_m, max_doc_chars, teacher, teacher_scale.value))


@app.command("listwise")
def listwise_cmd(
    backbone: BackboneOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained listwise ranker."),
    dataset: DatasetOpt = "scifact",
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(8, "--list-size", min=2, help="Passages per list (the window size)."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="Optimiser steps (one list each)."),
    lr: float = typer.Option(1e-5, "--lr", help="AdamW learning rate."),
    responses: int = typer.Option(8, "--responses", min=2, help="Permutations per list graded by NDCG (LiPO's K)."),
    beta: float = typer.Option(0.05, "--beta", help="LiPO beta on the policy/reference log-ratio."),
    max_doc_tokens: MaxDocTokensOpt = 64,
    data_dir: DataDirOpt = None,
    seed: int = typer.Option(0, "--seed", help="Seed for lists and permutations."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.fp32,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune the listwise permutation ranker with LiPO-λ against a frozen reference.

    Examples:
        rankwise train listwise --backbone models/smollm2 --output models/listwise --max-steps 100
        rankwise train listwise --backbone models/smollm2 --output models/listwise --list-size 4 --responses 8 --beta 0.1
        rankwise train listwise --backbone models/smollm2 --output models/listwise --device cuda --dtype bf16
    """
    from rankwise.train.llm_recipes import train_listwise

    cfg = _config(backbone, output, overwrite, dataset, data_dir, device, dtype, queries=queries, list_size=list_size, max_steps=max_steps,
                  lr=lr, seed=seed, max_doc_tokens=max_doc_tokens)
    _train_into(cfg, lambda c: train_listwise(c, responses, beta, log=lambda step, loss: typer.echo(f"step {step} loss {loss:.4f}")))


@app.command("iranker")
def iranker_cmd(
    backbone: BackboneOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained IRanker."),
    dataset: DatasetOpt = "scifact",
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries; each gives list-size − 1 elimination states."),
    list_size: int = typer.Option(6, "--list-size", min=2, help="Candidates per list (≤ 26)."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="GRPO steps."),
    lr: float = typer.Option(1e-6, "--lr", help="Learning rate (the paper: 1e-6)."),
    generations: int = typer.Option(4, "--generations", min=2, help="GRPO samples per state."),
    max_doc_tokens: MaxDocTokensOpt = 64,
    data_dir: DataDirOpt = None,
    seed: int = typer.Option(0, "--seed", help="Seed for lists, states and training."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.fp32,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train IRanker's single elimination step with GRPO (step reward + format reward).

    Examples:
        rankwise train iranker --backbone models/smollm2 --output models/iranker --max-steps 100
        rankwise train iranker --backbone models/smollm2 --output models/iranker --list-size 10 --generations 8
        rankwise train iranker --backbone models/smollm2 --output models/iranker --device cuda --dtype bf16
    """
    from rankwise.train.llm_recipes import train_iranker

    if list_size > 26:
        _fail(f"--list-size {list_size}: IRanker pools hold at most 26 candidates")
    cfg = _config(backbone, output, overwrite, dataset, data_dir, device, dtype, queries=queries, list_size=list_size, max_steps=max_steps,
                  lr=lr, seed=seed, max_doc_tokens=max_doc_tokens, generations=generations)
    _train_into(cfg, train_iranker)


@app.command("rank-grpo")
def rank_grpo_cmd(
    backbone: BackboneOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained listwise ranker."),
    dataset: DatasetOpt = "scifact",
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(8, "--list-size", min=2, help="Passages per prompt = items N per completion."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="GRPO steps."),
    lr: float = typer.Option(1e-6, "--lr", help="Learning rate (the paper: 1e-6)."),
    generations: int = typer.Option(8, "--generations", min=2, help="Samples per prompt (the paper: 8)."),
    rank_reward: RankReward = typer.Option(RankReward.exp_inf, "--rank-reward", help="Per-rank reward: the rank's own relevance (exp_inf, the authors' default) or DCG from rank k (log_decay)."),
    max_doc_tokens: MaxDocTokensOpt = 64,
    data_dir: DataDirOpt = None,
    seed: int = typer.Option(0, "--seed", help="Seed for lists and training."),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = DtypeChoice.fp32,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a listwise ranker whose answer is one passage id per line, with rank-level GRPO.

    Examples:
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --max-steps 100
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --rank-reward log_decay --generations 4
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --device cuda --dtype bf16
    """
    from rankwise.train.llm_recipes import train_rank_grpo

    cfg = _config(backbone, output, overwrite, dataset, data_dir, device, dtype, queries=queries, list_size=list_size, max_steps=max_steps,
                  lr=lr, seed=seed, max_doc_tokens=max_doc_tokens, generations=generations)
    _train_into(cfg, lambda c: train_rank_grpo(c, rank_reward.value))
