"""Ranking objectives on SciFact: one scorer fine-tuned with each objective, reranking BM25's top-100.

What it measures: nDCG@10 / R@10 / MRR@10 on SciFact test (all 300 queries) after fine-tuning the
same starting model, with the same steps, lists and BM25 hard negatives, with each objective of
``train/losses`` (pointwise BCE, RankNet, ListNet, ListMLE, LambdaLoss, LiPO-λ, RankList) and with the
BM25 reciprocal-rank curriculum for LiPO-λ and RankList. Each reranker is reported alone, fused with
BM25, and fused with BM25 and the untrained bi-encoder (three-way z-score fusion), on all test queries
and on the two subsets split by whether a query's relevant documents are also train positives
(SciFact's splits share one corpus: a trained model can learn "this document was cited in train").

The scorer: the scaled-cosine bi-encoder of ``rankers/bi_encoder_ranker.py``. ``--query-tower adapter``
trains an identity-initialised linear adapter (and the scale) on top of the frozen all-MiniLM-L6-v2
query encoder; ``--query-tower encoder`` fine-tunes the query encoder itself. Documents always go
through the frozen original (max length 256, vectors cached on disk), so before training either
scorer is exactly the bundled bi-encoder's cosine.

Protocol: SciFact train queries with a relevant document are split once (split seed 0) into 80% for
training and 20% held out ("dev"). For every run the learning rate (from ``--lr-grid``) and all fusion
weights (z-score, grid step 0.05) are chosen on dev, never on test. ``--seeds`` repeats every run with
other training seeds (list sampling and initial order); seed means are added as rows.

Command (2 cores; the adapter runs take seconds each, the encoder runs minutes):
    .venv/bin/python benchmarks/objectives_scifact.py --seeds 0 1 2
    .venv/bin/python benchmarks/objectives_scifact.py --query-tower encoder --seeds 0 1 2 --only ranknet lambdaloss lipo ranklist
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from rankwise.eval.datasets.beir import load_beir
from rankwise.core.paths import cache_dir
from rankwise.eval.fusion_fit import fit_fusion_weights
from rankwise.eval.metrics import evaluate
from rankwise.eval.subsets import positive_overlap_subsets
from rankwise.train.dev_eval import split_dev_queries
from rankwise.eval.report import RESULTS_DIR, plot_bars, print_table, write_results
from rankwise.rankers.bi_encoder_ranker import QueryTower, TrainableBiEncoder
from rankwise.rankers.first_stage.bm25 import BM25Retriever
from rankwise.rankers.fusion import fuse_many
from rankwise.core.model_dir import read_rankwise_json, write_rankwise_json
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig
from rankwise.train.data import HardNegativeLists

METRICS = ("ndcg@10", "recall@10", "mrr@10")
RUNS = [(o, None) for o in ("pointwise", "ranknet", "listnet", "listmle", "lambdaloss", "lipo", "ranklist")] + [
    ("lipo", "bm25-rr"), ("ranklist", "bm25-rr"),
]
LR_GRID = {"adapter": (1e-3, 3e-3), "encoder": (2e-5, 5e-5)}
KEY = ("model", "query_tower", "objective", "curriculum", "fusion", "subset", "seed")


@dataclass
class BenchConfig:
    """Budget and data of the benchmark (identical for every objective)."""

    seeds: tuple[int, ...] = (0,)
    split_seed: int = 0
    query_tower: str = "adapter"
    steps: int = 300
    lists_per_step: int = 16
    list_size: int = 32
    lr_grid: tuple[float, ...] = ()
    max_length: int = 128
    top_k: int = 100
    dev_fraction: float = 0.2
    runs: list[tuple[str, str | None]] = field(default_factory=lambda: list(RUNS))
    models_dir: str = str(cache_dir() / "bench-objectives")
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.query_tower not in LR_GRID:
            raise ValueError(f"--query-tower: one of {sorted(LR_GRID)}, got {self.query_tower!r}")
        self.lr_grid = tuple(self.lr_grid) or LR_GRID[self.query_tower]


def _fresh_ranker(start: TrainableBiEncoder, cfg: BenchConfig) -> TrainableBiEncoder:
    """``start``'s cosine scorer, ready to train: a new identity adapter on the shared frozen encoder
    (pooled query vectors shared), or a fresh copy of the query encoder; document vectors shared."""
    device = next(start.model.parameters()).device
    if cfg.query_tower == "adapter":
        tower = QueryTower(start.model.encoder, adapter=True, train_encoder=False).to(device)
        ranker = TrainableBiEncoder(tower, start.tokenizer, start.doc_encoder, start.doc_encoder_ref, start.max_length,
                                    start.doc_max_length)
        ranker._pooled = start._pooled
    else:
        ranker = TrainableBiEncoder.from_pretrained(max_length=cfg.max_length, train_encoder=True, device=str(device))
        ranker.doc_encoder = start.doc_encoder
    ranker._doc_vectors = start._doc_vectors
    return ranker


class Runs:
    """BM25, the untrained bi-encoder and one trained scorer on dev and test, fused and split by subset."""

    def __init__(self, cfg: BenchConfig) -> None:
        train, test = load_beir("scifact", "train"), load_beir("scifact", "test")
        self.doc_text = {d: train.doc_text(d) for d in train.corpus}
        self.bm25 = BM25Retriever.from_corpus(self.doc_text)
        self.fit_ids, dev_ids = split_dev_queries(train.qrels, cfg.dev_fraction, cfg.split_seed)
        self.train = train
        self.queries = {"dev": {q: train.queries[q] for q in dev_ids}, "test": test.queries}
        self.qrels = {"dev": {q: train.qrels[q] for q in dev_ids}, "test": test.qrels}
        self.subsets = {"all": test.qrels, **positive_overlap_subsets(train.qrels, test.qrels)}
        self.first = {split: self.bm25.batch_search(q, cfg.top_k) for split, q in self.queries.items()}
        self.untrained: dict[str, pl.DataFrame] = {}

    def rerank(self, ranker: TrainableBiEncoder, split: str) -> pl.DataFrame:
        return ranker.rerank_candidates(self.first[split], self.queries[split], self.doc_text)

    def dev_fused(self, ranker: TrainableBiEncoder) -> float:
        """Best dev nDCG@10 of BM25 + ``ranker`` (what the learning rate is chosen by)."""
        return fit_fusion_weights([self.first["dev"], self.rerank(ranker, "dev")], self.qrels["dev"])[1]

    def rows(self, name: dict, ranker: TrainableBiEncoder) -> tuple[list[dict], float]:
        """Rows of ``ranker`` alone, + BM25 and + BM25 + untrained bi-encoder, for every subset; and
        the BM25 weight of the two-way fusion (chosen on dev)."""
        dev, test = self.rerank(ranker, "dev"), self.rerank(ranker, "test")
        variants = [({"fusion": "none"}, test)]
        (w, _), dev_two = fit_fusion_weights([self.first["dev"], dev], self.qrels["dev"])
        variants.append(({"fusion": "zscore", "fusion_weight": w, "dev_ndcg@10_fused": dev_two},
                         fuse_many([self.first["test"], test], [w, 1 - w])))
        if self.untrained and name["objective"] != "untrained":
            weights, dev_three = fit_fusion_weights([self.first["dev"], self.untrained["dev"], dev], self.qrels["dev"])
            variants.append(({"fusion": "zscore+bi-encoder", "fusion_weight": weights[0], "fusion_weight_bi_encoder": weights[1],
                              "fusion_weight_trained": weights[2], "dev_ndcg@10_fused": dev_three},
                             fuse_many([self.first["test"], self.untrained["test"], test], weights)))
        out = []
        for extra, run_df in variants:
            for subset, qrels in self.subsets.items():
                out.append({**name, **extra, "subset": subset, "queries": len(qrels), **evaluate(qrels, run_df, METRICS)})
        return out, w


def seed_means(rows: list[dict]) -> list[dict]:
    """One row per (model, tower, objective, curriculum, fusion, subset) with several seeds: metric means and stds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if isinstance(r.get("seed"), int):
            groups.setdefault(tuple(r.get(k) for k in KEY if k != "seed"), []).append(r)
    out = []
    for group in groups.values():
        if len(group) > 1:
            mean = {k: group[0][k] for k in KEY if k in group[0]} | {"dataset": "scifact", "queries": group[0]["queries"]}
            mean |= {m: float(np.mean([r[m] for r in group])) for m in METRICS}
            mean |= {f"{m}_std": float(np.std([r[m] for r in group])) for m in METRICS}
            mean["seed"], mean["seeds"] = f"mean of {len(group)}", len(group)
            out.append(mean)
    return out


def run(cfg: BenchConfig) -> list[dict]:
    """Train and evaluate every (objective, curriculum) of ``cfg.runs`` for every seed; returns flat rows."""
    data = Runs(cfg)
    base = {"dataset": "scifact"}
    rows = []
    for subset, qrels in data.subsets.items():
        rows.append({**base, "model": "bm25", "objective": "none", "curriculum": "none", "fusion": "none", "subset": subset,
                     "queries": len(qrels), **evaluate(qrels, data.first["test"], METRICS), "train_s": 0.0})

    start = TrainableBiEncoder.from_pretrained(max_length=cfg.max_length, query_adapter=True, train_encoder=False, device=cfg.device)
    t0 = time.perf_counter()
    start.doc_encoder.encode_documents(list(data.doc_text.values()), progress=True)  # cached on disk after the first run
    print(f"document vectors ready in {time.perf_counter() - t0:.1f}s")
    untrained, _ = data.rows({**base, "model": "bi-encoder", "objective": "untrained", "curriculum": "none"}, start)
    rows += [{**r, "train_s": 0.0} for r in untrained]
    data.untrained = {split: data.rerank(start, split) for split in ("dev", "test")}
    print_table([r for r in rows if r["subset"] == "all"], "so far")

    queries = {q: data.train.queries[q] for q in data.fit_ids}
    for seed in cfg.seeds:
        for objective, curriculum in cfg.runs:
            tag = f"{cfg.query_tower}-{objective}-{curriculum or 'none'}-seed{seed}"
            best = None
            for lr in cfg.lr_grid:  # chosen on the held-out train queries
                torch.manual_seed(seed)
                lists = HardNegativeLists(queries, data.train.qrels, data.doc_text, lambda q, k: data.bm25.search(q, k),
                                          list_size=cfg.list_size, negatives_from=cfg.top_k, epochs=None, seed=seed)
                out = Path(cfg.models_dir) / f"{tag}-lr{lr:g}"
                ranker = _fresh_ranker(start, cfg)
                tcfg = CrossEncoderTrainerConfig(
                    str(out), objective=objective, curriculum=curriculum, max_steps=cfg.steps,
                    lists_per_step=cfg.lists_per_step, learning_rate=lr, seed=seed, log_every=50,
                )
                summary = CrossEncoderTrainer(ranker, lists, tcfg).train()
                dev_ndcg = data.dev_fused(ranker)
                print(f"{tag} lr {lr:g}: dev fused nDCG@10 {dev_ndcg:.4f}, loss {summary['final_loss']:.4f}")
                if best is None or dev_ndcg > best[0]:
                    best = (dev_ndcg, lr, ranker, summary, out)
            _, lr, ranker, summary, out = best
            name = {**base, "model": "bi-encoder-adapter" if cfg.query_tower == "adapter" else "bi-encoder-finetuned",
                    "query_tower": cfg.query_tower, "objective": objective, "curriculum": curriculum or "none", "seed": seed}
            got, w = data.rows(name, ranker)
            meta = read_rankwise_json(out)
            write_rankwise_json(out, meta.pop("kind"), **{**meta, "fusion_weight": w})  # eval reads it (chosen on dev)
            rows += [{**r, "lr": lr, "train_s": round(summary["train_s"], 1), "steps": summary["steps"],
                      "final_loss": summary["final_loss"], "scale": round(ranker.scale, 3)} for r in got]
            print_table([r for r in got if r["subset"] != "positives-seen-in-train"], tag)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=BenchConfig.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(BenchConfig.seeds))
    parser.add_argument("--query-tower", choices=sorted(LR_GRID), default=BenchConfig.query_tower)
    parser.add_argument("--lr-grid", type=float, nargs="+", default=[])
    parser.add_argument("--device", default="cpu", help="auto (CUDA when available), cuda or cpu")
    parser.add_argument("--only", nargs="*", help="objective[:curriculum] to run (default: all)")
    args = parser.parse_args()
    cfg = BenchConfig(steps=args.steps, seeds=tuple(args.seeds), query_tower=args.query_tower, lr_grid=tuple(args.lr_grid),
                      device=args.device)
    if args.only:
        cfg.runs = [(s.split(":")[0], s.split(":")[1] if ":" in s else None) for s in args.only]
    rows = run(cfg)
    protocol = (
        f"SciFact test (all 300 queries; subsets split by whether a query's relevant documents are train positives), "
        f"BM25 top-{cfg.top_k} reranked; scorer = all-MiniLM-L6-v2 scaled cosine with documents through the frozen original "
        f"(max length 256, cached) and the query tower per row (adapter: a linear adapter + scale on the frozen encoder; "
        f"encoder: the query encoder fine-tuned; queries max length {cfg.max_length}); {cfg.steps} steps x {cfg.lists_per_step} "
        f"lists x {cfg.list_size} candidates (positives + BM25 top-{cfg.top_k} negatives) on 80% of SciFact train queries; "
        "AdamW lr per run and every z-score fusion weight (BM25; BM25 + untrained bi-encoder + trained) chosen on the held-out "
        "20% of train queries (never on test); training seeds per row, seed means where a run has several"
    )
    fresh = {tuple(r.get(k) for k in KEY) for r in rows}
    path = RESULTS_DIR / "objectives_scifact.json"
    if path.is_file():  # keep other towers' and seeds' rows of the current format (every row has a subset)
        import json

        rows = [r for r in json.loads(path.read_text())["rows"] if "subset" in r and tuple(r.get(k) for k in KEY) not in fresh
                and ("query_tower" in r or r["model"] in ("bm25", "bi-encoder")) and not str(r.get("seed")).startswith("mean")] + rows
    rows += seed_means(rows)
    print_table([r for r in rows if r["subset"] == "all"], f"objectives on SciFact - {protocol}")
    write_results("objectives_scifact", rows, protocol, config={k: str(v) for k, v in asdict(cfg).items()})
    shown = [r for r in rows if r["subset"] == "all" and (r["fusion"] != "none" or r["model"] == "bm25")
             and (not isinstance(r.get("seed"), int) or len(cfg.seeds) == 1)]
    plot_bars(shown, ["model", "objective", "curriculum", "fusion", "seed"], "ndcg@10", RESULTS_DIR / "objectives_scifact.png",
              title="SciFact test nDCG@10 (BM25 top-100 reranked, fused)")


if __name__ == "__main__":
    main()
