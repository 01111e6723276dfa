"""`rankwise train erank|listwise|iranker|rank-grpo ...`: fine-tune LLM rankers on a BEIR train split."""

from __future__ import annotations

import random
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train LLM rankers (ERank, listwise, IRanker, Rank-GRPO).")

DATASET_HELP = "BEIR dataset name (under the data dir) or a BEIR-layout folder with qrels/train.tsv."
BACKBONE_HELP = "Causal LM: an HF folder (e.g. from `rankwise models materialize smollm2`), a rankwise LLM ranker folder, or a hub id."


class ERankStage(str, Enum):
    """ERank training stage."""

    sft = "sft"
    grpo = "grpo"


class RankReward(str, Enum):
    """Rank-GRPO per-rank reward."""

    exp_inf = "exp_inf"
    log_decay = "log_decay"


class DeviceChoice(str, Enum):
    """Where the model trains."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class DtypeChoice(str, Enum):
    """Training precision."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DEVICE_HELP = "auto (CUDA when available, else CPU), cuda or cpu."
DTYPE_HELP = (
    "fp32, bf16 or fp16. On CUDA bf16/fp16 is mixed precision over fp32 weights (TRL/transformers "
    "--bf16/--fp16, autocast for listwise); on CPU the weights are loaded in that dtype."
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _check(backbone: str, output: Path) -> None:
    import re

    if not Path(backbone).exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", backbone):
        _fail(f"--backbone {backbone}: no such folder (give a local folder or an org/name hub id)")
    if output.exists() and any(output.iterdir()):
        _fail(f"--output {output}: exists and is not empty")


def _lists(dataset: str, data_dir: Optional[Path], queries: int, list_size: int, seed: int) -> list:
    """``queries`` training lists (positives + BM25 hard negatives) from the train split."""
    from rankwise.eval.datasets.beir import load_beir
    from rankwise.rankers.first_stage.bm25 import BM25Retriever
    from rankwise.train.data import HardNegativeLists

    try:
        ds = load_beir(dataset, "train", data_dir=data_dir, download=False)
    except (OSError, ValueError) as err:
        _fail(f"--dataset {dataset}: {err}")
    bm25 = BM25Retriever.from_corpus({d: ds.doc_text(d) for d in ds.corpus})
    stream = HardNegativeLists(ds.queries, ds.qrels, ds.doc_text, bm25.search, list_size=list_size, negatives_from=30, seed=seed)
    out = []
    for item in stream:
        out.append(item)
        if len(out) >= queries:
            break
    return out


class _Placement:
    """Device and precision of one training run, mapped onto TRL/transformers arguments.

    On CUDA the weights stay fp32 and bf16/fp16 is mixed precision (``bf16``/``fp16`` arguments);
    on CPU there is no mixed precision: the weights are loaded in the requested dtype.
    """

    def __init__(self, device: DeviceChoice, dtype: DtypeChoice) -> None:
        import torch

        from rankwise.rankers.device import resolve_device, resolve_dtype

        try:
            self.device = resolve_device(device.value)
        except ValueError as err:
            _fail(f"--device: {err}")
        self.dtype = resolve_dtype(dtype.value)
        self.cuda = self.device.type == "cuda"
        self.load_dtype = torch.float32 if self.cuda else self.dtype

    def trainer_args(self) -> dict:
        """``use_cpu``, ``bf16``, ``fp16`` for a ``TrainingArguments`` subclass."""
        import torch

        return {
            "use_cpu": not self.cuda,
            "bf16": self.cuda and self.dtype == torch.bfloat16,
            "fp16": self.cuda and self.dtype == torch.float16,
        }

    def model_init_kwargs(self) -> dict:
        """How TRL loads a model given by path (``GRPOConfig.model_init_kwargs``)."""
        return {"dtype": str(self.load_dtype).removeprefix("torch.")}


def _grpo_args(config_cls, output: Path, max_steps: int, lr: float, generations: int, batch: int, completion: int, seed: int,
               place: _Placement, **kw):
    return config_cls(
        **place.trainer_args(), model_init_kwargs=place.model_init_kwargs(),
        output_dir=str(output / "checkpoints"), max_steps=max_steps, learning_rate=lr, num_generations=generations,
        per_device_train_batch_size=batch, max_completion_length=completion, logging_steps=max(1, max_steps // 20),
        save_strategy="no", report_to="none", seed=seed, **kw,
    )


@app.command("erank")
def erank_cmd(
    backbone: str = typer.Option(..., "--backbone", help=BACKBONE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained ERank ranker."),
    stage: ERankStage = typer.Option(ERankStage.sft, "--stage", help="sft: teach the 0-10 integer readout; grpo: RL with the listwise-derived reward (start from an SFT model)."),
    dataset: str = typer.Option("scifact", "--dataset", help=DATASET_HELP),
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(4, "--list-size", min=2, help="Documents per query: positives + BM25 hard negatives."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="Optimiser steps."),
    lr: float = typer.Option(1e-5, "--lr", help="Learning rate."),
    curriculum_m: int = typer.Option(0, "--curriculum-m", min=0, help="SFT curriculum length in steps (BM25 reciprocal-rank ease; 0: off)."),
    generations: int = typer.Option(4, "--generations", min=2, help="GRPO samples per prompt."),
    max_doc_chars: int = typer.Option(800, "--max-doc-chars", min=50, help="Documents are cut to this many characters."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where named datasets live (default $RANKWISE_DATA)."),
    seed: int = typer.Option(0, "--seed", help="Seed for lists and training."),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help=DEVICE_HELP),
    dtype: DtypeChoice = typer.Option(DtypeChoice.fp32, "--dtype", help=DTYPE_HELP),
) -> None:
    """Fine-tune an ERank pointwise ranker: SFT on 0-10 targets, then optionally GRPO.

    Examples:
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --max-steps 200
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --curriculum-m 50
        rankwise train erank --stage grpo --backbone models/erank-sft --output models/erank-rl --max-steps 50
        rankwise train erank --backbone models/smollm2 --output models/erank-sft --device cuda --dtype bf16
    """
    _check(backbone, output)
    place = _Placement(device, dtype)
    from datasets import Dataset

    from rankwise.rankers.erank import ERankRanker, erank_prompt
    from rankwise.rankers.llm import load_causal_lm
    from rankwise.train.sft import CurriculumSFTConfig, erank_sft_examples, graded_target, train_sft

    lists = _lists(dataset, data_dir, queries, list_size, seed)
    model, tok = load_causal_lm(backbone, dtype=place.load_dtype)
    if stage == ERankStage.sft:
        rows = erank_sft_examples(
            tok, {t.qid: t.query for t in lists},
            {t.qid: list(zip(t.docs, t.labels, t.first_stage_ranks)) for t in lists},
            max_label=max(max(t.labels) for t in lists), max_doc_chars=max_doc_chars,
        )
        config = CurriculumSFTConfig(
            output_dir=str(output / "checkpoints"), max_steps=max_steps, learning_rate=lr, per_device_train_batch_size=8,
            save_strategy="no", report_to="none", seed=seed, logging_steps=max(1, max_steps // 20),
            curriculum_m=curriculum_m or None, **place.trainer_args(),
        )
        trainer = train_sft(model, tok, rows, config)
    else:
        from trl import GRPOConfig, GRPOTrainer

        from rankwise.train.grpo.erank_reward import erank_format_reward, erank_list_reward

        top = max(max(t.labels) for t in lists)
        rows = [
            {"prompt": erank_prompt(tok, t.query, d[:max_doc_chars]), "qid": t.qid, "label": graded_target(y, top)}
            for t in lists for d, y in zip(t.docs, t.labels)
        ]
        args = _grpo_args(GRPOConfig, output, max_steps, lr, generations, list_size * generations, 8, seed, place,
                          shuffle_dataset=False)
        trainer = GRPOTrainer(backbone, reward_funcs=[erank_list_reward, erank_format_reward],
                              train_dataset=Dataset.from_list(rows), processing_class=tok, args=args)
        trainer.train()
    ERankRanker(trainer.model, tok, readout="integer").save_pretrained(output, backbone=str(backbone), stage=stage.value)
    typer.echo(f"wrote {output}")


@app.command("listwise")
def listwise_cmd(
    backbone: str = typer.Option(..., "--backbone", help=BACKBONE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained listwise ranker."),
    dataset: str = typer.Option("scifact", "--dataset", help=DATASET_HELP),
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(8, "--list-size", min=2, help="Passages per list (the window size)."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="Optimiser steps (one list each)."),
    lr: float = typer.Option(1e-5, "--lr", help="AdamW learning rate."),
    responses: int = typer.Option(8, "--responses", min=2, help="Permutations per list graded by NDCG (LiPO's K)."),
    beta: float = typer.Option(0.05, "--beta", help="LiPO beta on the policy/reference log-ratio."),
    max_doc_tokens: int = typer.Option(64, "--max-doc-tokens", min=8, help="Each passage is cut to this many tokens."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where named datasets live (default $RANKWISE_DATA)."),
    seed: int = typer.Option(0, "--seed", help="Seed for lists and permutations."),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help=DEVICE_HELP),
    dtype: DtypeChoice = typer.Option(DtypeChoice.fp32, "--dtype", help=DTYPE_HELP),
) -> None:
    """Fine-tune the listwise permutation ranker with LiPO-λ against a frozen reference.

    Examples:
        rankwise train listwise --backbone models/smollm2 --output models/listwise --max-steps 100
        rankwise train listwise --backbone models/smollm2 --output models/listwise --list-size 4 --responses 8 --beta 0.1
        rankwise train listwise --backbone models/smollm2 --output models/listwise --device cuda --dtype bf16
    """
    _check(backbone, output)
    place = _Placement(device, dtype)
    import contextlib

    import torch

    from rankwise.rankers.listwise import ListwiseRanker
    from rankwise.train.listwise_lipo import ListwiseLiPOConfig, ListwiseLiPOTrainer

    lists = _lists(dataset, data_dir, queries, list_size, seed)
    ranker = ListwiseRanker.from_pretrained(backbone, dtype=place.load_dtype, device=place.device, window=list_size,
                                            stride=max(1, list_size // 2), max_doc_tokens=max_doc_tokens)
    trainer = ListwiseLiPOTrainer(ranker, ListwiseLiPOConfig(beta=beta, responses=responses, learning_rate=lr, max_doc_tokens=max_doc_tokens, seed=seed))
    mixed = place.cuda and place.dtype != torch.float32
    for step in range(max_steps):
        t = lists[step % len(lists)]
        with torch.autocast("cuda", dtype=place.dtype) if mixed else contextlib.nullcontext():
            loss = trainer.step([(t.query, list(t.docs), list(t.labels))])
        if step % max(1, max_steps // 20) == 0:
            typer.echo(f"step {step} loss {loss:.4f}")
    ranker.save_pretrained(output, backbone=str(backbone))
    typer.echo(f"wrote {output}")


@app.command("iranker")
def iranker_cmd(
    backbone: str = typer.Option(..., "--backbone", help=BACKBONE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained IRanker."),
    dataset: str = typer.Option("scifact", "--dataset", help=DATASET_HELP),
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries; each gives list-size − 1 elimination states."),
    list_size: int = typer.Option(6, "--list-size", min=2, help="Candidates per list (≤ 26)."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="GRPO steps."),
    lr: float = typer.Option(1e-6, "--lr", help="Learning rate (the paper: 1e-6)."),
    generations: int = typer.Option(4, "--generations", min=2, help="GRPO samples per state."),
    max_doc_tokens: int = typer.Option(64, "--max-doc-tokens", min=8, help="Each passage is cut to this many tokens."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where named datasets live (default $RANKWISE_DATA)."),
    seed: int = typer.Option(0, "--seed", help="Seed for lists, states and training."),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help=DEVICE_HELP),
    dtype: DtypeChoice = typer.Option(DtypeChoice.fp32, "--dtype", help=DTYPE_HELP),
) -> None:
    """Train IRanker's single elimination step with GRPO (step reward + format reward).

    Examples:
        rankwise train iranker --backbone models/smollm2 --output models/iranker --max-steps 100
        rankwise train iranker --backbone models/smollm2 --output models/iranker --list-size 10 --generations 8
        rankwise train iranker --backbone models/smollm2 --output models/iranker --device cuda --dtype bf16
    """
    _check(backbone, output)
    place = _Placement(device, dtype)
    if list_size > 26:
        _fail(f"--list-size {list_size}: IRanker pools hold at most 26 candidates")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rankwise.rankers.iranker import IRanker
    from rankwise.rankers.llm import load_causal_lm, truncate_text
    from rankwise.train.grpo.iranker import iranker_format_reward, iranker_states, iranker_step_reward

    lists = _lists(dataset, data_dir, queries, list_size, seed)
    _, tok = load_causal_lm(backbone)
    rng = random.Random(seed)
    rows = [
        row for t in lists
        for row in iranker_states(tok, t.query, [truncate_text(tok, d, max_doc_tokens) for d in t.docs], t.labels, rng)
    ]
    args = _grpo_args(GRPOConfig, output, max_steps, lr, generations, 2 * generations, 6, seed, place, beta=1e-3)
    trainer = GRPOTrainer(backbone, reward_funcs=[iranker_step_reward, iranker_format_reward],
                          train_dataset=Dataset.from_list(rows), processing_class=tok, args=args)
    trainer.train()
    IRanker(trainer.model, tok, max_doc_tokens=max_doc_tokens).save_pretrained(output, backbone=str(backbone))
    typer.echo(f"wrote {output}")


@app.command("rank-grpo")
def rank_grpo_cmd(
    backbone: str = typer.Option(..., "--backbone", help=BACKBONE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained listwise ranker."),
    dataset: str = typer.Option("scifact", "--dataset", help=DATASET_HELP),
    queries: int = typer.Option(64, "--queries", min=1, help="Training queries (lists)."),
    list_size: int = typer.Option(8, "--list-size", min=2, help="Passages per prompt = items N per completion."),
    max_steps: int = typer.Option(100, "--max-steps", min=1, help="GRPO steps."),
    lr: float = typer.Option(1e-6, "--lr", help="Learning rate (the paper: 1e-6)."),
    generations: int = typer.Option(8, "--generations", min=2, help="Samples per prompt (the paper: 8)."),
    rank_reward: RankReward = typer.Option(RankReward.exp_inf, "--rank-reward", help="Per-rank reward: the rank's own relevance (exp_inf, the authors' default) or DCG from rank k (log_decay)."),
    max_doc_tokens: int = typer.Option(64, "--max-doc-tokens", min=8, help="Each passage is cut to this many tokens."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where named datasets live (default $RANKWISE_DATA)."),
    seed: int = typer.Option(0, "--seed", help="Seed for lists and training."),
    device: DeviceChoice = typer.Option(DeviceChoice.auto, "--device", help=DEVICE_HELP),
    dtype: DtypeChoice = typer.Option(DtypeChoice.fp32, "--dtype", help=DTYPE_HELP),
) -> None:
    """Train a listwise ranker whose answer is one passage id per line, with rank-level GRPO.

    Examples:
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --max-steps 100
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --rank-reward log_decay --generations 4
        rankwise train rank-grpo --backbone models/smollm2 --output models/rank-grpo --device cuda --dtype bf16
    """
    _check(backbone, output)
    place = _Placement(device, dtype)
    from datasets import Dataset

    from rankwise.rankers.listwise import ListwiseRanker, listwise_prompt
    from rankwise.rankers.llm import load_causal_lm, truncate_text
    from rankwise.train.grpo.rank_grpo import RankGRPOConfig, RankGRPOTrainer

    lists = _lists(dataset, data_dir, queries, list_size, seed)
    _, tok = load_causal_lm(backbone)
    rows = [
        {"prompt": listwise_prompt(tok, t.query, [truncate_text(tok, d, max_doc_tokens) for d in t.docs], "lines"),
         "labels": list(t.labels)}
        for t in lists
    ]
    args = _grpo_args(RankGRPOConfig, output, max_steps, lr, generations, generations, 6 * list_size, seed, place,
                      n_ranks=list_size, rank_reward=rank_reward.value)
    trainer = RankGRPOTrainer(backbone, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    ListwiseRanker(trainer.model, tok, window=list_size, stride=max(1, list_size // 2), max_doc_tokens=max_doc_tokens,
                   answer="lines").save_pretrained(output, backbone=str(backbone))
    typer.echo(f"wrote {output}")
