"""Ranking objectives on SciFact: one scorer fine-tuned with each objective, reranking BM25's top-100.

What it measures: nDCG@10 / R@10 / MRR@10 on SciFact test (all 300 queries) after fine-tuning the
same starting model, with the same seed, steps, lists and BM25 hard negatives, with each objective
of ``train/losses`` (pointwise BCE, RankNet, ListNet, ListMLE, LambdaLoss, LiPO-λ, RankList) and with
the BM25 reciprocal-rank curriculum for LiPO-λ and RankList; each reranker alone and fused with BM25.

The scorer (why not a cross-encoder): on 2 CPU cores a MiniLM cross-encoder with a fresh head does
not learn in a short budget (shared README: nDCG@10 0.088 after 15 minutes). This benchmark fine-tunes
the scaled-cosine bi-encoder of ``rankers/bi_encoder_ranker.py`` instead: the bundled all-MiniLM-L6-v2
query tower (mean pooling, max length 128) is trained, the document tower is the frozen original
(max length 256, vectors encoded once and cached on disk, shared with the dense first stage), and ``score = scale * cos`` with a learned scale. Before training
it is exactly the bundled bi-encoder's cosine, so every objective starts from what the weights know.

Protocol: SciFact train queries with a relevant document are split by seed into 80% for training and
20% held out ("dev"); the z-score fusion weight ``w`` of BM25 (``s = w z(bm25) + (1 - w) z(model)``) is
chosen on dev for every row (grid 0, 0.05, ..., 1), never on test. Anchors: BM25 (pyserini, k1 0.9,
b 0.4) 0.6789 nDCG@10; the untrained fusion row is the baseline a trained reranker must beat.

Finding (2026-11-25 run): the pairwise objectives lift fused test nDCG@10 from 0.737 to ~0.81, but the
gain is a *document prior*: 64% of SciFact test (query, relevant doc) pairs reuse a document that is a
positive of some train query (one corpus for all splits), and the adapter's bias learns "cited in train".
On the 104 test queries whose positives are all unseen in train, trained models are at or below the
untrained fusion (0.74 vs 0.757). ``--diagnose`` adds those subset rows from the saved models.

Command (about 3 minutes of training and evaluation on 2 cores, under the shared CPU lock):
    flock /tmp/rankwise-cpu.lock .venv/bin/python benchmarks/objectives_scifact.py
    flock /tmp/rankwise-cpu.lock .venv/bin/python benchmarks/objectives_scifact.py --diagnose
Hardware: the machine recorded in the JSON (2 CPU threads, no GPU).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
from rankwise.rankers.fusion import fuse
from rankwise.core.model_dir import read_rankwise_json, write_rankwise_json
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig
from rankwise.train.data import HardNegativeLists

METRICS = ("ndcg@10", "recall@10", "mrr@10")
RUNS = [(o, None) for o in ("pointwise", "ranknet", "listnet", "listmle", "lambdaloss", "lipo", "ranklist")] + [
    ("lipo", "bm25-rr"), ("ranklist", "bm25-rr"),
]


@dataclass
class BenchConfig:
    """Budget and data of the benchmark (identical for every objective)."""

    seed: int = 0
    steps: int = 300
    lists_per_step: int = 16
    list_size: int = 32
    lr_grid: tuple[float, ...] = (1e-3, 3e-3)
    max_length: int = 128
    top_k: int = 100
    dev_fraction: float = 0.2
    runs: list[tuple[str, str | None]] = field(default_factory=lambda: list(RUNS))
    models_dir: str = str(cache_dir() / "bench-objectives")
    device: str = "cpu"


def split_train_queries(qrels: dict, seed: int = 0, dev_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """(fit, dev) query ids: train queries with a positive, shuffled by ``seed``, ``dev_fraction`` held out."""
    return split_dev_queries(qrels, dev_fraction, seed)


def _rerank(ranker: TrainableBiEncoder, cands: pl.DataFrame, queries: dict, doc_text) -> pl.DataFrame:
    return ranker.rerank_candidates(cands, queries, doc_text)


def _best_weight(first: pl.DataFrame, reranked: pl.DataFrame, qrels: dict) -> float:
    return fit_fusion_weights([first, reranked], qrels)[0][0]


def _fresh_adapter(start: TrainableBiEncoder) -> TrainableBiEncoder:
    """A new identity adapter and scale on ``start``'s frozen towers (shared, with their cached vectors)."""
    tower = QueryTower(start.model.encoder, adapter=True, train_encoder=False).to(next(start.model.parameters()).device)
    ranker = TrainableBiEncoder(tower, start.tokenizer, start.doc_encoder, start.doc_encoder_ref, start.max_length, start.doc_max_length)
    ranker._pooled, ranker._doc_vectors = start._pooled, start._doc_vectors
    return ranker


def _dev_score(ranker, bm25_dev, dev_q, dev_qrels, doc_text) -> tuple[float, float]:
    """(best fused dev nDCG@10, its BM25 weight)."""
    dev = _rerank(ranker, bm25_dev, dev_q, doc_text)
    w = _best_weight(bm25_dev, dev, dev_qrels)
    return evaluate(dev_qrels, fuse(bm25_dev, dev, w), ["ndcg@10"])["ndcg@10"], w


def _rows_for(name: dict, ranker, bm25_dev, bm25_test, dev_q, test_q, dev_qrels, test_qrels, doc_text) -> tuple[list[dict], float]:
    dev_ndcg, w = _dev_score(ranker, bm25_dev, dev_q, dev_qrels, doc_text)
    test = _rerank(ranker, bm25_test, test_q, doc_text)
    alone = {**name, "fusion": "none", **evaluate(test_qrels, test, METRICS), "dev_ndcg@10_fused": dev_ndcg}
    fused = {**name, "fusion": "zscore", "fusion_weight": w, **evaluate(test_qrels, fuse(bm25_test, test, w), METRICS),
             "dev_ndcg@10_fused": dev_ndcg}
    return [alone, fused], w


def run(cfg: BenchConfig) -> list[dict]:
    """Train and evaluate every (objective, curriculum) of ``cfg.runs``; returns flat result rows."""
    torch.manual_seed(cfg.seed)
    train = load_beir("scifact", "train")
    test = load_beir("scifact", "test")
    doc_text = {d: train.doc_text(d) for d in train.corpus}
    bm25 = BM25Retriever.from_corpus(doc_text)
    fit_ids, dev_ids = split_train_queries(train.qrels, cfg.seed, cfg.dev_fraction)
    dev_q = {q: train.queries[q] for q in dev_ids}
    dev_qrels = {q: train.qrels[q] for q in dev_ids}
    bm25_dev = bm25.batch_search(dev_q, cfg.top_k)
    bm25_test = bm25.batch_search(test.queries, cfg.top_k)
    base = {"dataset": "scifact", "queries": len(test.queries)}
    rows = [{**base, "model": "bm25", "objective": "none", "curriculum": "none", "fusion": "none",
             **evaluate(test.qrels, bm25_test, METRICS), "train_s": 0.0}]

    start = TrainableBiEncoder.from_pretrained(max_length=cfg.max_length, query_adapter=True, train_encoder=False, device=cfg.device)
    t0 = time.perf_counter()
    start.doc_encoder.encode_documents(list(doc_text.values()), progress=True)  # cached on disk after the first run
    print(f"document vectors ready in {time.perf_counter() - t0:.1f}s")
    untrained, _ = _rows_for({**base, "model": "bi-encoder", "objective": "untrained", "curriculum": "none"},
                             start, bm25_dev, bm25_test, dev_q, test.queries, dev_qrels, test.qrels, doc_text)
    rows += [{**r, "train_s": 0.0} for r in untrained]
    print_table(rows, "so far")

    lists = HardNegativeLists(
        {q: train.queries[q] for q in fit_ids}, train.qrels, doc_text, lambda q, k: bm25.search(q, k),
        list_size=cfg.list_size, negatives_from=cfg.top_k, epochs=None, seed=cfg.seed,
    )
    for objective, curriculum in cfg.runs:
        tag = f"{objective}-{curriculum or 'none'}"
        best = None
        for lr in cfg.lr_grid:  # chosen on the held-out train queries
            out = Path(cfg.models_dir) / f"{tag}-lr{lr:g}"
            ranker = _fresh_adapter(start)
            tcfg = CrossEncoderTrainerConfig(
                str(out), objective=objective, curriculum=curriculum, max_steps=cfg.steps,
                lists_per_step=cfg.lists_per_step, learning_rate=lr, seed=cfg.seed, log_every=20,
            )
            summary = CrossEncoderTrainer(ranker, lists, tcfg).train()
            dev_ndcg, _ = _dev_score(ranker, bm25_dev, dev_q, dev_qrels, doc_text)
            print(f"{tag} lr {lr:g}: dev fused nDCG@10 {dev_ndcg:.4f}, loss {summary['final_loss']:.4f}")
            if best is None or dev_ndcg > best[0]:
                best = (dev_ndcg, lr, ranker, summary, out)
        _, lr, ranker, summary, out = best
        got, w = _rows_for({**base, "model": "bi-encoder-adapter", "objective": objective, "curriculum": curriculum or "none"},
                           ranker, bm25_dev, bm25_test, dev_q, test.queries, dev_qrels, test.qrels, doc_text)
        meta = read_rankwise_json(out)
        write_rankwise_json(out, meta.pop("kind"), **{**meta, "fusion_weight": w})  # eval reads it (chosen on dev)
        for r in got:
            rows.append({**r, "lr": lr, "train_s": round(summary["train_s"], 1), "steps": summary["steps"],
                         "final_loss": summary["final_loss"], "scale": round(ranker.scale, 3)})
        print_table(rows[-2:], tag)
    return rows


def diagnose(cfg: BenchConfig, rows: list[dict]) -> list[dict]:
    """Split test queries by whether a relevant document of theirs is also a positive of some train
    query (SciFact shares one corpus across splits), and re-score the saved models on each part.

    Reads the models written by :func:`run` (adapter + scale of the dev-chosen lr) and the fusion
    weights in ``rows``; returns extra rows with a ``subset`` field.
    """
    import json

    from safetensors.torch import load_file

    from rankwise.rankers.bi_encoder_ranker import ADAPTER_FILE

    train, test = load_beir("scifact", "train"), load_beir("scifact", "test")
    doc_text = {d: test.doc_text(d) for d in test.corpus}
    subsets = positive_overlap_subsets(train.qrels, test.qrels)
    bm25_test = BM25Retriever.from_corpus(doc_text).batch_search(test.queries, cfg.top_k)
    start = TrainableBiEncoder.from_pretrained(max_length=cfg.max_length, query_adapter=True, train_encoder=False, device=cfg.device)
    out = []
    for r in rows:
        if r["model"] == "bm25":
            run_df, name = bm25_test, r
        else:
            ranker = _fresh_adapter(start)
            if r["objective"] != "untrained":
                d = Path(cfg.models_dir) / f"{r['objective']}-{r['curriculum']}-lr{r['lr']:g}"
                ranker.model.adapter.load_state_dict(load_file(str(d / ADAPTER_FILE)))
                ranker.model.log_scale.data.fill_(float(torch.tensor(json.loads((d / "rankwise.json").read_text())["scale"]).log()))
            run_df = _rerank(ranker, bm25_test, test.queries, doc_text)
            if r["fusion"] == "zscore":
                run_df = fuse(bm25_test, run_df, r["fusion_weight"])
        for subset, qrels in subsets.items():
            keep = {k: r[k] for k in ("dataset", "model", "objective", "curriculum", "fusion", "fusion_weight", "lr") if k in r}
            out.append({**keep, "subset": subset, "queries": len(qrels), **evaluate(qrels, run_df, METRICS)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=BenchConfig.steps)
    parser.add_argument("--device", default="cpu", help="auto (CUDA when available), cuda or cpu")
    parser.add_argument("--only", nargs="*", help="objective[:curriculum] to run (default: all)")
    parser.add_argument("--diagnose", action="store_true",
                        help="add seen/unseen-positive test subsets for the models of an existing results file")
    args = parser.parse_args()
    if args.diagnose:
        import json

        path = RESULTS_DIR / "objectives_scifact.json"
        doc = json.loads(path.read_text())
        cfg = BenchConfig()
        rows = [r for r in doc["rows"] if "subset" not in r]
        rows += diagnose(cfg, rows)
        print_table([r for r in rows if "subset" in r], "test queries split by whether their positives were train positives")
        extra = {k: v for k, v in doc.items() if k not in ("benchmark", "protocol", "machine", "rankwise_version", "date", "rows")}
        write_results("objectives_scifact", rows, doc["protocol"] + "; rows with 'subset' split test queries by whether "
                      "a relevant document of theirs is also a train positive (same corpus), scored by the same saved models", **extra)
        return
    cfg = BenchConfig(steps=args.steps, device=args.device)
    if args.only:
        cfg.runs = [(s.split(":")[0], s.split(":")[1] if ":" in s else None) for s in args.only]
    rows = run(cfg)
    protocol = (
        f"SciFact test (all 300 queries), BM25 top-{cfg.top_k} reranked; scorer = all-MiniLM-L6-v2 scaled cosine, "
        f"linear query adapter + scale trained on frozen cached MiniLM vectors (queries max length {cfg.max_length}, documents 256); same seed {cfg.seed}, "
        f"{cfg.steps} steps x {cfg.lists_per_step} lists x {cfg.list_size} candidates (positives + BM25 top-{cfg.top_k} "
        f"negatives) on 80% of SciFact train queries; AdamW lr per run from {list(cfg.lr_grid)} and z-score BM25 "
        "fusion weight, both chosen on the held-out 20% of train queries (never on test); one seed"
    )
    print_table(rows, f"objectives on SciFact - {protocol}")
    write_results("objectives_scifact", rows, protocol, config={k: str(v) for k, v in asdict(cfg).items()})
    shown = [r for r in rows if r["fusion"] == "zscore" or r["model"] == "bm25"]
    plot_bars(shown, ["model", "objective", "curriculum", "fusion"], "ndcg@10", RESULTS_DIR / "objectives_scifact.png",
              title="SciFact test nDCG@10 (BM25 top-100 reranked, fused with BM25)")


if __name__ == "__main__":
    main()
