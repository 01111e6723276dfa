"""CLS against mean pooling for a cross-encoder started from the bundled all-MiniLM-L6-v2 bi-encoder.

What it measures: the dev nDCG@10 curve (held-out SciFact train queries, BM25 top-k candidates)
of the same cross-encoder trained with the same objective, seed, lists and steps, read through
``[CLS]`` (the model's pooler + a new head) or through the mean of the last hidden states (+ a new
head). Every choice is made on train queries; no test query is touched. The better pooling is the
default of ``rankwise train cross-encoder``; ``objectives_scifact_cross_encoder.py`` uses it.

Command (CPU, about 15 minutes with the defaults):
    .venv/bin/python benchmarks/cross_encoder_pooling.py
Output: ``benchmarks/results/cross_encoder_pooling.json`` (+ ``.png``), one row per (pooling, step).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from rankwise.eval.report import RESULTS_DIR, plot_lines, print_table, write_results
from rankwise.train.cross_encoder_trainer import CrossEncoderTrainerConfig, train_on_beir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", default="lambdaloss")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lists-per-step", type=int, default=4)
    parser.add_argument("--list-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--dev-queries", type=int, default=40)
    parser.add_argument("--dev-top-k", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for pooling in ("cls", "mean"):
        out = Path(tempfile.mkdtemp(prefix=f"rankwise-pooling-{pooling}-"))
        cfg = CrossEncoderTrainerConfig(str(out), objective=args.objective, max_steps=args.steps, lists_per_step=args.lists_per_step,
                                        learning_rate=args.lr, seed=args.seed, eval_steps=args.eval_steps, patience=args.steps,
                                        progress=False, log_every=args.eval_steps)
        summary = train_on_beir("scifact", cfg, max_length=args.max_length, list_size=args.list_size, data_seed=args.seed,
                                device=args.device, pooling=pooling, dev_fraction=args.dev_fraction, dev_top_k=args.dev_top_k,
                                dev_max_queries=args.dev_queries)
        losses = {h["step"]: h["loss"] for h in summary["history"] if "loss" in h}
        for point in summary["curve"]:
            rows.append({"dataset": "scifact", "split": "train-dev", "queries": args.dev_queries, "model": "cross-encoder",
                         "pooling": pooling, "objective": args.objective, "step": point["step"], "ndcg@10": point["dev"],
                         "loss": losses.get(point["step"]), "train_s": round(summary["train_s"], 1),
                         "device": "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"})
        print(f"{pooling}: best {summary['best']}", flush=True)
    protocol = (f"SciFact train: {args.dev_fraction:.0%} of the queries with a positive held out (seed {args.seed}); dev nDCG@10 on "
                f"{args.dev_queries} of them, BM25 top-{args.dev_top_k}; all-MiniLM-L6-v2 as a cross-encoder with a new head, "
                f"{args.objective}, {args.steps} steps x {args.lists_per_step} lists x {args.list_size} candidates, max length "
                f"{args.max_length}, AdamW lr {args.lr}, 10% warm-up then linear decay; one seed")
    print_table(rows, f"cross-encoder pooling - {protocol}")
    write_results("cross_encoder_pooling", rows, protocol, config=vars(args))
    plot_lines(rows, x="step", y="ndcg@10", group="pooling", path=RESULTS_DIR / "cross_encoder_pooling.png",
               title="SciFact dev nDCG@10 while training: CLS vs mean pooling")


if __name__ == "__main__":
    main()
