"""Sequential recommenders under one protocol: SASRec, ReaRec-ERL, ReaRec-PRL, HLLM (frozen item LLM), HCN-style, HSTU.

What it measures: test HR@10, NDCG@10, Recall@50/200 (and @200 NDCG) of each model trained on the same
leave-one-out split with the same budget (epochs and, where given, a wall-clock cap), plus train time.
Protocol: leave-one-out, full ranking over all items, the user's history excluded (HSTU/HLLM-style), or with
``--protocol hstu`` the HSTU authors' own (train on all but the last item, every catalogue item ranked, only
the last max-length history items excluded; ``rankwise.recsys.data``); rows under it carry ``protocol: hstu``.
HSTU (``--models hstu``) trains with the authors' ML-1M recipe: sampled softmax with 128 negatives,
AdamW betas (0.9, 0.98), no gradient clipping; ``--models rearec-hstu-erl,rearec-hstu-prl`` put ReaRec's
reasoning steps on that backbone with the same recipe (``recsys.rearec.ReaRecHSTU``, ours).

Anchor: the HSTU repository's SASRec row on ML-1M, HR@10 .2853 / NDCG@10 .1603 (target ≥ .28 / .155).

Commands (CPU ones under the shared lock, the last on a GPU; each row is written as soon as it finishes, reruns skip done rows):
    flock /tmp/rankwise-cpu.lock python benchmarks/recsys_ml1m.py --dataset ml-1m --models sasrec,rearec-erl,rearec-prl
    flock /tmp/rankwise-cpu.lock python benchmarks/recsys_ml1m.py --dataset amazon2018_scientific
    flock /tmp/rankwise-cpu.lock python benchmarks/recsys_ml1m.py --dataset yelp_s3rec --epochs 10
    python benchmarks/recsys_ml1m.py --dataset yelp_s3rec --epochs 20 --max-minutes 2 --device cuda --seeds 42,1,2
    python benchmarks/recsys_ml1m.py --dataset ml-1m --models hstu,sasrec --protocol hstu --sasrec-loss sampled --epochs 101 --seeds 42,1,2 --device cuda
    python benchmarks/recsys_ml1m.py --dataset ml-1m --models hstu,rearec-hstu-erl --protocol hstu --epochs 101 --seeds 42,1,2 --device cuda

Results: ``benchmarks/results/recsys_<dataset>.json`` (+ ``.png``); ML-1M writes ``recsys_ml1m.json``.
Hardware: the 2-core CPU build machine unless a row says otherwise; one seed per row (42) unless ``--seeds``.

Command options: ``--epochs``, ``--max-minutes`` (cap per row), ``--seeds``, ``--sasrec-loss ce|sampled``,
``--hidden`` (width instead of the preset's), ``--similarity cosine|dot`` (cosine / 0.05 as in HSTU, the default; dot / 0.07 as in the ReaRec paper, for
SASRec, ReaRec and HCN alike), ``--hllm-negatives N`` (512 as in the paper; 0 = the whole catalog) and ``--hllm-adapter
linear|mlp`` (HLLM's item side), ``--hllm-user-llm DIR`` (HLLM's user model: an HF decoder, e.g. SmolLM2-135M from
``rankwise models materialize smollm2 --output DIR``), ``--reasoning-steps K`` and ``--erl-lambda λ`` (ReaRec; the paper's 2 and 0.05 by
default), ``--eval-split valid`` (score the validation items instead of the test items, to choose a setting before
the test run), ``--device cuda`` (rows record their device and hardware; a row is keyed by model, loss, similarity,
budget, seed, device, width, HLLM adapter and user LLM, split, K, λ and reasoning dropout).

Findings and negative results of earlier runs: ``docs/notes.md``; current tables: ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rankwise.eval.datasets.interactions import load_interactions
from rankwise.eval.report import RESULTS_DIR, machine_info, merge_results, plot_bars, print_table
from rankwise.recsys import build_recommender
from rankwise.recsys.data import SequenceData
from rankwise.recsys.evaluate import evaluate_full_ranking, protocol_text
from rankwise.recsys.trainer import RecTrainer, RecTrainerConfig

ALL_MODELS = ("sasrec", "rearec-erl", "rearec-prl", "hllm", "hcn", "hstu")
GPU_MODELS = ("hllm-ft",)  # HLLM with the item LLM fine-tuned end to end: only on a GPU (``--models hllm-ft``)
HSTU_REASONING = ("rearec-hstu-erl", "rearec-hstu-prl")  # ReaRec's steps on the HSTU backbone, HSTU's recipe (ours)
KNOWN_MODELS = ALL_MODELS + GPU_MODELS + HSTU_REASONING

# Per-dataset backbone: ML-1M = the HSTU repo's SASRec config (full softmax instead of 128 sampled
# negatives: it converges in far fewer epochs on CPU); short-sequence Amazon/Yelp: ReaRec's depth, heads and
# dropout at d 64 (their d 256 scored lower for SASRec and ReaRec on Scientific; see the docstring).
PRESETS = {
    "ml-1m": {"hidden": 50, "n_layers": 2, "n_heads": 1, "dropout": 0.2, "max_len": 200, "batch": 128, "epochs": 12},
    "amazon2018_scientific": {"hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.5, "max_len": 50, "batch": 128, "epochs": 40},
    "yelp_s3rec": {"hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.5, "max_len": 50, "batch": 256, "epochs": 12},
}


@dataclass
class BenchConfig:
    """One benchmark invocation: dataset, models, budget and seeds."""

    dataset: str = "ml-1m"
    models: tuple[str, ...] = ALL_MODELS
    epochs: int | None = None
    max_minutes: float | None = None
    seeds: tuple[int, ...] = (42,)
    sasrec_loss: str = "ce"
    similarity: str = "cosine"  # cosine / 0.05 (HSTU), or dot / 0.07 (the ReaRec paper's scoring)
    device: str = "cpu"
    force: bool = False
    extra: dict = field(default_factory=dict)
    hllm_negatives: int = 512  # HLLM's InfoNCE negatives: 512 (the paper), or 0 = the whole catalog
    hllm_adapter: str = "linear"  # HLLM's item adapter: linear, or mlp
    hllm_user_llm: str | None = None  # HLLM's user model: an HF decoder directory, or None = the small transformer
    hllm_id_vectors: bool = False  # HLLM items = adapted text vector + a learned id vector (ours; rows record id_vectors)
    eval_split: str = "test"  # "valid" scores the second-last items: for choosing settings before a test run
    reasoning_steps: int = 2  # ReaRec's K (the paper's default 2)
    erl_lambda: float = 0.05  # ReaRec-ERL's KL diversity weight λ (the paper's default 0.05)
    reasoning_dropout: bool = False  # dropout on ReaRec's reasoning inputs at the model's rate (an earlier reading)
    authors_inputs: bool = False  # ReaRec as the authors feed it: LayerNormed item inputs, reasoning dropout 0.2
    post_ln: bool = False  # ReaRec with post-LN blocks (the authors' encoder)
    protocol: str = "ours"  # "hstu": the HSTU authors' split, catalogue and history exclusion

    def variant(self, model_name: str) -> dict:
        """Row fields for settings other than the defaults (they are part of the row's key)."""
        out: dict = {"split": self.eval_split} if self.eval_split != "test" else {}
        if self.protocol != "ours":
            out["protocol"] = self.protocol
        if model_name.startswith("rearec") and self.reasoning_steps != 2:
            out["reasoning_steps"] = self.reasoning_steps
        if model_name.startswith("rearec") and self.reasoning_dropout:
            out["reasoning_dropout"] = True
        if model_name.startswith("rearec") and self.authors_inputs:
            out["authors_inputs"] = True
        if model_name.startswith("rearec") and self.post_ln:
            out["post_ln"] = True
        if model_name == "rearec-erl" and self.erl_lambda != 0.05:
            out["erl_lambda"] = self.erl_lambda
        if model_name.startswith("hllm") and self.hllm_user_llm:
            out["user_llm"] = Path(self.hllm_user_llm).name
        if model_name.startswith("hllm") and self.hllm_id_vectors:
            out["id_vectors"] = True
        return out


def bench_name(dataset: str) -> str:
    return {"ml-1m": "recsys_ml1m", "amazon2018_scientific": "recsys_scientific", "yelp_s3rec": "recsys_yelp"}.get(
        dataset, f"recsys_{dataset.replace('-', '_')}"
    )


SCORING = {"cosine": {"similarity": "cosine", "temperature": 0.05}, "dot": {"similarity": "dot", "temperature": 0.07}}


def build_model(name: str, data: SequenceData, preset: dict, bench: BenchConfig):  # noqa: ANN201
    """The recommender ``name`` for ``data`` with the preset's backbone and the invocation's settings."""
    common = {k: preset[k] for k in ("hidden", "n_layers", "n_heads", "dropout", "max_len")}
    shared = {"loss": "ce", **SCORING[bench.similarity]}
    hllm = {"n_negatives": bench.hllm_negatives, "adapter": bench.hllm_adapter, "user_llm": bench.hllm_user_llm,
            "item_id_vectors": bench.hllm_id_vectors}
    if name == "sasrec":
        return build_recommender("sasrec", data, **common, **{**shared, "loss": bench.sasrec_loss})
    if name in HSTU_REASONING:  # HSTU's recipe (below) with ReaRec's steps
        return build_recommender("rearec-hstu", data, **common, **{**shared, "loss": "sampled"}, n_negatives=128,
                                 objective=name.split("-")[2], reasoning_steps=bench.reasoning_steps, erl_lambda=bench.erl_lambda,
                                 **({"reasoning_dropout": 0.2, "input_layernorm": True} if bench.authors_inputs
                                    else {"reasoning_dropout": bench.reasoning_dropout}))
    if name.startswith("rearec"):
        return build_recommender("rearec", data, **common, **{**shared, "loss": bench.sasrec_loss}, objective=name.split("-")[1],
                                 reasoning_steps=bench.reasoning_steps, erl_lambda=bench.erl_lambda,
                                 **({"reasoning_dropout": 0.2, "input_layernorm": True} if bench.authors_inputs
                                    else {"reasoning_dropout": bench.reasoning_dropout}), post_ln=bench.post_ln)
    if name == "hcn":
        return build_recommender("hcn", data, **{**common, "n_layers": 1}, **shared)
    if name == "hllm":
        return build_recommender("hllm", data, **common, item_mode="frozen", **hllm)
    if name == "hstu":  # the authors' ML-1M recipe: sampled softmax, 128 negatives (HSTUConfig's defaults otherwise)
        return build_recommender("hstu", data, **common, **{**shared, "loss": "sampled"}, n_negatives=128)
    if name == "hllm-ft":  # mean pooling: MiniLM was trained for it (the paper's [ITEM] slot suits decoder LLMs)
        return build_recommender("hllm", data, **common, item_mode="finetune", pooling="mean", prompt="", **hllm)
    raise ValueError(f"unknown model {name!r}; choose from {KNOWN_MODELS}")


def _key(row: dict) -> tuple:
    """Rows are unique per (model, loss, similarity, dataset, seed, budget, device, width, adapter, split, K, λ,
    reasoning dropout, user LLM, HLLM id vectors): a model may appear at two budgets."""
    return (row["model"], row.get("loss", "ce"), row.get("similarity", "cosine"), row["dataset"], row["seed"], row["budget"],
            row.get("device", "cpu"), row.get("hidden"), row.get("adapter"), row.get("split", "test"),
            row.get("reasoning_steps"), row.get("erl_lambda"), row.get("reasoning_dropout"), row.get("user_llm"),
            row.get("authors_inputs"), row.get("post_ln"), row.get("protocol", "ours"), row.get("id_vectors"))


def _hardware(device: str) -> str:
    """What trained the row: the GPU's name for a CUDA device, else the CPU model and thread count
    (a result file collects rows from several machines; its top-level ``machine`` is the last writer's)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    info = machine_info()
    return f"{info['cpu']}, {info['threads']} threads"


def _load_rows(path: Path) -> list[dict]:
    if path.is_file():
        return json.loads(path.read_text())["rows"]
    return []


def run(config: BenchConfig) -> list[dict]:
    """Train and evaluate each (model, seed); rows already in the result file are kept, not rerun."""
    torch.set_num_threads(2)
    torch.set_float32_matmul_precision("high")  # TF32 on CUDA (rows from 2026-11-26 on); no effect on CPU
    preset = {**PRESETS.get(config.dataset, PRESETS["amazon2018_scientific"]), **config.extra}
    epochs = config.epochs or preset["epochs"]
    if config.protocol == "hstu" and config.eval_split != "test":
        raise ValueError("--protocol hstu holds out no validation split: --eval-split test only")
    data = SequenceData.from_interactions(load_interactions(config.dataset), protocol=config.protocol)
    name = bench_name(config.dataset)
    path = RESULTS_DIR / f"{name}.json"
    rows = _load_rows(path)
    for model_name in config.models:
        for seed in config.seeds:
            budget = f"{epochs} epochs" + (f", cap {config.max_minutes} min" if config.max_minutes else "")
            hstu_family = model_name == "hstu" or model_name in HSTU_REASONING
            same_backbone = model_name == "sasrec" or (model_name.startswith("rearec") and not hstu_family)
            hllm = model_name.startswith("hllm")
            infonce = f"infonce-{config.hllm_negatives}" if config.hllm_negatives > 0 else "infonce-catalog"
            loss = infonce if hllm else config.sasrec_loss if same_backbone else "sampled" if hstu_family else "ce"
            adapter = config.hllm_adapter if hllm and config.hllm_adapter != "linear" else None
            ident = {  # the fields that identify a row (see _key); settings at their defaults are left out
                "model": model_name, "loss": loss, "similarity": config.similarity, "dataset": config.dataset,
                "seed": seed, "budget": budget, "device": config.device,
                **({"hidden": preset["hidden"]} if "hidden" in config.extra else {}),  # width other than the preset's
                **({"adapter": adapter} if adapter else {}),  # HLLM item adapter other than linear
                **config.variant(model_name),  # split, ReaRec K / λ / reasoning dropout, HLLM user LLM
            }
            key = _key(ident)
            if not config.force and any(_key(r) == key for r in rows):
                continue
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            model = build_model(model_name, data, preset, config).to(config.device)
            setup_s = time.perf_counter() - t0  # HLLM: item-LLM encoding of the catalog (cached on disk)
            trainer_cfg = RecTrainerConfig(
                epochs=epochs, batch_size=preset["batch"], lr=1e-3, seed=seed, max_minutes=config.max_minutes,
                windows="last", progress=False, **({"adam_beta2": 0.98, "grad_clip": 0.0} if hstu_family else {}),
            )
            log = RecTrainer(model, data, trainer_cfg).train()
            t1 = time.perf_counter()
            metrics = evaluate_full_ranking(model, data, config.eval_split)
            eval_s = time.perf_counter() - t1
            row = {
                **ident,
                "hr@10": metrics["hr@10"],
                "ndcg@10": metrics["ndcg@10"],
                "recall@50": metrics["recall@50"],
                "recall@200": metrics["recall@200"],
                "ndcg@200": metrics["ndcg@200"],
                "epochs": log.epochs,
                "hardware": _hardware(config.device),
                "train_s": round(log.train_s, 1),
                "setup_s": round(setup_s, 1),
                "eval_s": round(eval_s, 1),
                "final_loss": round(log.losses[-1], 4),
                "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            }
            print(json.dumps(row), flush=True)
            rows = merge_results(name, [row], _key, protocol_text("ours") + "; rows with protocol 'hstu': " + protocol_text("hstu"), device=config.device, preset=json.dumps(preset), sort=lambda r: (
                r["budget"], KNOWN_MODELS.index(r["model"]) if r["model"] in KNOWN_MODELS else 99, r["seed"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every model (default: preset)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock cap per row")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--sasrec-loss", default="ce", choices=["ce", "sampled"],
                        help="SASRec and ReaRec loss: full softmax, or 128 sampled negatives (the HSTU repo's setting)")
    parser.add_argument("--similarity", default="cosine", choices=list(SCORING),
                        help="scoring of SASRec, ReaRec and HCN: cosine / 0.05 (HSTU), or dot / 0.07 (the ReaRec paper)")
    parser.add_argument("--device", default="cpu", help="torch device for training and evaluation (e.g. cuda)")
    parser.add_argument("--force", action="store_true", help="rerun rows already in the result file")
    parser.add_argument("--hidden", type=int, default=None, help="model width instead of the preset's (rows record it)")
    parser.add_argument("--hllm-negatives", type=int, default=512,
                        help="HLLM InfoNCE negatives: 512 (the paper), or 0 = the whole catalog (frozen item LLM only)")
    parser.add_argument("--hllm-adapter", default="linear", choices=["linear", "mlp"], help="HLLM item adapter (rows record mlp)")
    parser.add_argument("--hllm-id-vectors", action="store_true",
                        help="HLLM items = adapted text vector + a learned per-item id vector (ours; rows record id_vectors)")
    parser.add_argument("--hllm-user-llm", default=None,
                        help="HLLM user model: an HF decoder directory (rows record its folder name); default the small transformer")
    parser.add_argument("--eval-split", default="test", choices=["test", "valid"],
                        help="score the test items, or the validation items to choose settings (rows record valid)")
    parser.add_argument("--reasoning-steps", type=int, default=2, help="ReaRec's K (rows record other values)")
    parser.add_argument("--erl-lambda", type=float, default=0.05, help="ReaRec-ERL's KL weight λ (rows record other values)")
    parser.add_argument("--reasoning-dropout", action="store_true",
                        help="dropout on ReaRec's reasoning inputs at the model's rate (rows record it)")
    parser.add_argument("--post-ln", action="store_true", help="ReaRec with post-LN blocks, as the authors' encoder (rows record it)")
    parser.add_argument("--protocol", default="ours", choices=["ours", "hstu"],
                        help="split, catalogue and history exclusion: ours, or the HSTU authors' (rows record hstu)")
    parser.add_argument("--authors-inputs", action="store_true",
                        help="ReaRec with LayerNormed item inputs and reasoning dropout 0.2, as the authors' code (rows record it)")
    args = parser.parse_args()
    cfg = BenchConfig(
        dataset=args.dataset,
        models=tuple(args.models.split(",")),
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        sasrec_loss=args.sasrec_loss,
        similarity=args.similarity,
        device=args.device,
        force=args.force,
        extra={"hidden": args.hidden} if args.hidden else {},
        hllm_negatives=args.hllm_negatives,
        hllm_adapter=args.hllm_adapter,
        hllm_user_llm=args.hllm_user_llm,
        hllm_id_vectors=args.hllm_id_vectors,
        eval_split=args.eval_split,
        reasoning_steps=args.reasoning_steps,
        erl_lambda=args.erl_lambda,
        reasoning_dropout=args.reasoning_dropout,
        authors_inputs=args.authors_inputs,
        post_ln=args.post_ln,
        protocol=args.protocol,
    )
    rows = run(cfg)
    name = bench_name(cfg.dataset)
    print_table(rows, f"{name} — {protocol_text(cfg.protocol)}")
    plot_bars(rows, ("model", "protocol", "loss", "adapter", "user_llm", "reasoning_steps", "erl_lambda", "reasoning_dropout", "authors_inputs",
                     "post_ln", "split", "similarity", "hidden", "seed", "budget", "hardware"), "ndcg@10", RESULTS_DIR / f"{name}.png",
              title=f"{cfg.dataset}: NDCG@10, seed means ± std (protocol ours unless a bar says hstu)", mean_over="seed")


if __name__ == "__main__":
    main()
