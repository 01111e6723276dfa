"""SciFact first stage and the untrained fusion baseline every trained reranker must beat.

Measures, on BEIR SciFact test (300 queries): pyserini BM25 (anchor: pyserini's published
regression, nDCG@10 0.6789 / R@100 0.9253), dense retrieval with the bundled all-MiniLM-L6-v2 and
faiss (exact ``IndexFlatIP`` and ``IndexHNSWFlat``), and BM25 top-100 reranked by the bi-encoder
cosine: alone, RRF-fused (k = 60) and z-score-fused with BM25. The z-score fusion weight is chosen
on SciFact *train* (809 queries, grid 0–1 step 0.05), never on test; it is the default of
``rankwise eval beir`` (``eval.pipeline.DEFAULT_BI_ENCODER_FUSION_WEIGHT``).

Run: ``python benchmarks/scifact_first_stage.py`` (≈ 6 min on 2 cores, most of it encoding the
corpus once; vectors are cached). Hardware is recorded in the JSON.
"""

from __future__ import annotations

import time


from rankwise.eval.datasets.beir import load_beir
from rankwise.eval.fusion_fit import fit_fusion_weights, fusion_sweep
from rankwise.eval.metrics import evaluate
from rankwise.core.device import resolve_device
from rankwise.eval.report import RESULTS_DIR, plot_bars, print_table, write_results
from rankwise.rankers.bi_encoder import BiEncoder, BiEncoderRanker
from rankwise.rankers.first_stage.bm25 import BM25Retriever
from rankwise.rankers.first_stage.dense import DenseRetriever, IndexKind
from rankwise.rankers.fusion import fuse

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
PROTOCOL = "BEIR SciFact test (300 queries), BM25 flat k1=0.9 b=0.4, rerank top-100; fusion weight chosen on train"


def run(device: str = "auto") -> tuple[list[dict], dict]:
    test, train = load_beir("scifact", "test"), load_beir("scifact", "train")
    docs = {d: test.doc_text(d) for d in test.corpus}
    rows: list[dict] = []

    t0 = time.perf_counter()
    bm25 = BM25Retriever.from_corpus(docs)
    first = {"test": bm25.batch_search(test.queries, 100), "train": bm25.batch_search(train.queries, 100)}
    rows.append({"model": "bm25", "dataset": "scifact", "setting": "first stage",
                 **evaluate(test.qrels, first["test"], METRICS), "time_s": time.perf_counter() - t0})

    encoder = BiEncoder(device=str(resolve_device(device)))
    t0 = time.perf_counter()
    encoder.encode_documents(list(docs.values()), progress=True)
    encode_s = time.perf_counter() - t0
    for kind in IndexKind:
        t0 = time.perf_counter()
        dense = DenseRetriever.from_corpus(docs, encoder, index=kind)
        run_ = dense.batch_search(test.queries, 100)
        rows.append({"model": f"dense-{kind.value}", "dataset": "scifact", "setting": "first stage",
                     **evaluate(test.qrels, run_, METRICS), "time_s": time.perf_counter() - t0,
                     "encode_corpus_s": encode_s})

    ranker = BiEncoderRanker(encoder)
    rescored = {}
    for split, ds in (("test", test), ("train", train)):
        t0 = time.perf_counter()
        rescored[split] = ranker.rerank_candidates(first[split], ds.queries, docs)
        if split == "test":
            rerank_s = time.perf_counter() - t0
    rows.append({"model": "bm25+bi-encoder", "dataset": "scifact", "setting": "cosine only",
                 **evaluate(test.qrels, rescored["test"], METRICS), "time_s": rerank_s})
    rows.append({"model": "bm25+bi-encoder", "dataset": "scifact", "setting": "rrf k=60",
                 **evaluate(test.qrels, fuse(first["test"], rescored["test"], 0.5, "rrf"), METRICS)})

    curve = fusion_sweep([first["train"], rescored["train"]], train.qrels)
    grid, train_ndcg = [w[0] for w, _ in curve], [v for _, v in curve]
    best = fit_fusion_weights([first["train"], rescored["train"]], train.qrels)[0][0]
    rows.append({"model": "bm25+bi-encoder", "dataset": "scifact", "setting": f"zscore w={best} (train-chosen)",
                 **evaluate(test.qrels, fuse(first["test"], rescored["test"], best), METRICS),
                 "train_ndcg@10": max(train_ndcg)})
    sweep = {"fusion_weight_grid": " ".join(f"{w:.2f}" for w in grid),
             "train_ndcg@10_by_weight": " ".join(f"{v:.4f}" for v in train_ndcg), "chosen_fusion_weight": best}
    return rows, sweep


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu: where the bi-encoder runs")
    args = parser.parse_args()
    rows, sweep = run(args.device)
    print_table(rows, f"scifact_first_stage — {PROTOCOL}")
    print(f"fusion weight chosen on train: {sweep['chosen_fusion_weight']}")
    write_results("scifact_first_stage", rows, PROTOCOL, device=str(resolve_device(args.device)), **sweep)
    plot_bars(rows, ["model", "setting"], "ndcg@10", RESULTS_DIR / "scifact_first_stage.png",
              "SciFact test nDCG@10 (fusion weight chosen on train)")


if __name__ == "__main__":
    main()
