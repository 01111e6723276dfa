"""`rankwise train cross-encoder`: fine-tune a reranker with a ranking objective (issue: objectives)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import DataDirOpt, DeviceOpt, OverwriteOpt

app = typer.Typer(help="Train rerankers with pointwise, pairwise and listwise objectives.", no_args_is_help=True)


class Objective(str, Enum):
    """Objectives of ``train/losses``."""

    lipo = "lipo"
    ranklist = "ranklist"
    listnet = "listnet"
    listmle = "listmle"
    ranknet = "ranknet"
    lambdaloss = "lambdaloss"
    pointwise = "pointwise"
    distill_mse = "distill-mse"


class Curriculum(str, Enum):
    """Curriculum heuristics of ``train/curriculum.py``."""

    bm25_rr = "bm25-rr"
    bm25_score = "bm25-score"
    bm25_pair = "bm25-pair"


class Architecture(str, Enum):
    """What is fine-tuned."""

    cross_encoder = "cross-encoder"
    bi_encoder = "bi-encoder"
    bi_encoder_adapter = "bi-encoder-adapter"


def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


@app.command("cross-encoder")
def cross_encoder_cmd(
    dataset: str = typer.Option("scifact", "--dataset", help="BEIR dataset name (under the data dir) or a BEIR-layout folder with qrels/train.tsv."),
    objective: Objective = typer.Option(Objective.lipo, "--objective", help="Training objective."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained model (save_pretrained + rankwise.json) and its checkpoints."),
    curriculum: Optional[Curriculum] = typer.Option(None, "--curriculum", help="Curriculum weighting from BM25 evidence (bm25-pair: pairwise objectives only)."),
    model: Optional[str] = typer.Option(None, "--model", help="Starting encoder (folder or hub id); default: the bundled all-MiniLM-L6-v2."),
    architecture: Architecture = typer.Option(Architecture.cross_encoder, "--architecture", help="cross-encoder (pair -> logit), bi-encoder (scaled cosine, query tower trained, frozen cached document tower) or bi-encoder-adapter (only a linear query adapter and the scale train: seconds on CPU)."),
    max_steps: int = typer.Option(200, "--max-steps", min=1, help="Optimiser steps."),
    lists_per_step: int = typer.Option(8, "--lists-per-step", min=1, help="Queries (lists) per step."),
    list_size: int = typer.Option(16, "--list-size", min=2, help="Candidates per list: positives + BM25 hard negatives."),
    learning_rate: float = typer.Option(2e-5, "--lr", help="Peak AdamW learning rate."),
    max_length: int = typer.Option(256, "--max-length", min=8, help="Token limit per pair (cross-encoder) or per text (bi-encoder)."),
    save_steps: int = typer.Option(0, "--save-steps", min=0, help="Checkpoint every N steps (0: only the final model)."),
    resume: bool = typer.Option(False, "--resume", help="Train in --output itself and continue from its newest checkpoint (a run killed with --resume can be continued; without it the run is built aside and renamed into --output at the end)."),
    overwrite: OverwriteOpt = False,
    data_dir: DataDirOpt = None,
    seed: int = typer.Option(0, "--seed", help="Seed for the model and the list stream."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="A trained model whose logits become the labels (needed by --objective distill-mse)."),
    int8_aware: bool = typer.Option(False, "--int8-aware", help="Train through the simulation of `rankwise export --quantize int8` (quantisation-aware; cross-encoder only)."),
    device: DeviceOpt = "auto",
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, or bf16 (autocast; weights and optimiser stay fp32)."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Cross-encoder pooling: cls or mean (default: the model directory's own, else cls)."),
    dev_fraction: float = typer.Option(0.0, "--dev-fraction", min=0.0, max=0.9, help="Hold out this share of the train queries for dev nDCG@10 (early stopping, best checkpoint)."),
    eval_steps: int = typer.Option(0, "--eval-steps", min=0, help="Evaluate dev nDCG@10 every N steps (needs --dev-fraction)."),
    patience: int = typer.Option(3, "--patience", min=1, help="Stop after N dev evaluations without improvement."),
    dev_top_k: int = typer.Option(30, "--dev-top-k", min=2, help="BM25 candidates per dev query scored at each evaluation."),
    listmle_ties: str = typer.Option("separate", "--listmle-ties", help="ListMLE's tied labels: separate (only positions between different labels contribute; deterministic) or random (a random order within ties at every step)."),
    dev_max_queries: Optional[int] = typer.Option(None, "--dev-max-queries", min=1, help="Score at most N held-out queries at each evaluation."),
    objective_arg: Optional[list[str]] = typer.Option(None, "--objective-arg", help="KEY=VALUE, repeatable: a knob of the objective's class in rankwise.train.losses (e.g. temperature=0.5 for listnet, weighting=none for lipo, pos_weight=4 for pointwise)."),
) -> None:
    """Fine-tune a reranker on a BEIR train split with BM25 hard negatives and one objective.

    Examples:
        rankwise train cross-encoder --dataset scifact --objective lipo --output models/ce-lipo
        rankwise train cross-encoder --dataset scifact --objective ranklist --curriculum bm25-rr --output models/ce-rl
        rankwise train cross-encoder --objective listnet --architecture bi-encoder --max-length 128 --output models/bi-listnet
        rankwise train cross-encoder --objective lipo --output models/ce-lipo --save-steps 50 --resume
        rankwise train cross-encoder --objective ranknet --output models/ce-lipo --overwrite
        rankwise train cross-encoder --objective listnet --objective-arg temperature=0.5 --output models/ce-listnet
        rankwise train cross-encoder --objective distill-mse --teacher models/ce-lipo --model models/ce-lipo --int8-aware --lr 1e-5 --output models/ce-lipo-int8qat
    """
    from dataclasses import replace

    from rankwise.core.outputs import OutputError, atomic_dir, check_output
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig, train_on_beir

    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other: continue the run in --output, or start it over")
    try:
        resumable = resume and CrossEncoderTrainer.latest_checkpoint(output) is not None
        check_output(output, overwrite or resumable, "dir",
                     reason="and --resume found no checkpoint-* there to continue from" if resume else "")
    except OutputError as err:
        _fail(f"--output {err}")
    try:
        load_beir(dataset, "train", data_dir=data_dir, download=False)
    except (OSError, ValueError) as err:
        _fail(f"--dataset {dataset}: {err}")
    if model is not None and not Path(model).exists() and "/" not in model:
        _fail(f"--model {model}: no such folder (give a local folder or an org/name hub id)")
    if (objective is Objective.distill_mse) != (teacher is not None):
        _fail("--objective distill-mse and --teacher go together: the teacher's logits are the labels")
    if teacher is not None and not (teacher / "rankwise.json").is_file():
        _fail(f"--teacher {teacher}: not a rankwise model directory (no rankwise.json)")
    import torch

    from rankwise.core.device import resolve_dtype

    try:
        precision = resolve_dtype(dtype)
    except ValueError as err:
        _fail(f"--dtype: {err}")
    if precision is torch.float16:
        _fail("--dtype fp16: training in fp16 needs loss scaling, which this trainer does not do; use --dtype bf16")
    if pooling is not None and (pooling not in ("cls", "mean") or architecture is not Architecture.cross_encoder):
        _fail(f"--pooling {pooling}: cls or mean, for --architecture cross-encoder only")
    if (eval_steps > 0) != (dev_fraction > 0):
        _fail("--eval-steps and --dev-fraction go together: dev nDCG@10 is measured on the held-out train queries")
    if listmle_ties not in ("separate", "random"):
        _fail(f"--listmle-ties {listmle_ties}: separate or random")
    if listmle_ties != "separate" and objective is not Objective.listmle:
        _fail(f"--listmle-ties {listmle_ties}: a ListMLE option, but --objective is {objective.value}")
    from rankwise.train.losses import OBJECTIVES, make_objective
    from rankwise.train.losses.knobs import objective_kwargs

    try:
        knobs = objective_kwargs(OBJECTIVES[objective.value], objective_arg or [])
    except ValueError as err:
        _fail(f"--objective-arg {err}")
    if objective is Objective.listmle:
        if "ties" in knobs and listmle_ties != "separate":
            _fail("--listmle-ties and --objective-arg ties=... both set ListMLE's tie rule: give one")
        knobs.setdefault("ties", listmle_ties)
    try:
        make_objective(objective.value, **knobs)
    except (TypeError, ValueError) as err:
        _fail(f"--objective-arg: {err}")
    if int8_aware and architecture is not Architecture.cross_encoder:
        _fail(f"--int8-aware: only the cross-encoder architecture is exported with --quantize int8, not {architecture.value}")
    try:
        config = CrossEncoderTrainerConfig(
            output_dir=str(output), objective=objective.value, max_steps=max_steps, lists_per_step=lists_per_step,
            learning_rate=learning_rate, curriculum=curriculum.value if curriculum else None,
            save_steps=save_steps, seed=seed, int8_aware=int8_aware, bf16=precision is torch.bfloat16,
            eval_steps=eval_steps, patience=patience,
            objective_kwargs=knobs,
        )
    except ValueError as err:
        _fail(str(err))

    def run(out: Path) -> dict:
        return train_on_beir(
            dataset, replace(config, output_dir=str(out)), model=model, architecture=architecture.value,
            max_length=max_length, list_size=list_size, data_dir=data_dir, resume=resume, data_seed=seed, teacher=teacher,
            device=device, pooling=pooling, dev_fraction=dev_fraction, dev_top_k=dev_top_k, dev_max_queries=dev_max_queries,
        )

    if resume:  # checkpoints live in --output, so a killed run continues from there
        summary = run(output)
    else:
        with atomic_dir(output) as staging:
            summary = run(staging)
    best = f", best dev nDCG@10 {summary['best']['dev']:.4f} at step {summary['best']['step']}" if summary.get("best") else ""
    typer.echo(f"trained {summary['steps']} steps in {summary['train_s']:.1f}s, final loss {summary['final_loss']:.4f}{best} -> {output}")
