"""Ranking objectives on SciFact with the MiniLM cross-encoder: one model fine-tuned per objective.

What it measures: nDCG@10 / R@10 / MRR@10 on SciFact test (all 300 queries, BM25 top-100 reranked)
of the bundled all-MiniLM-L6-v2 weights fine-tuned as a cross-encoder (``[CLS] q [SEP] d [SEP]`` ->
new one-logit head, max length 256) with each objective of ``train/losses`` — pointwise BCE, RankNet,
ListNet, ListMLE, LambdaLoss, LiPO-λ, RankList — and with the BM25 reciprocal-rank curriculum for
LiPO-λ and RankList; same seed, steps, lists and BM25 hard negatives for every row. Each reranker is
reported alone, fused with BM25, and fused with BM25 and the bi-encoder (z-score fusion, every weight
chosen on held-out train queries); per training job, its two best runs by dev nDCG@10 are also fused
together with BM25 and the bi-encoder (the multi-ranker row). Every row is also reported on
the test queries whose positives are / are not train positives (SciFact shares one corpus across
splits, so a model can learn a document prior: see ``objectives_scifact.py``).

Why three steps: training 9 cross-encoders and scoring 46k pairs each costs about 4 hours on this
2-core CPU (shared README: ≈ 4–5 pairs/s training, a full test rerank ≈ 23 minutes) but a few
minutes on a GPU, while BM25 (pyserini, Java) and the evaluation run here. So:

    # 1. here: BM25 hard negatives and candidates + the start weights -> a self-contained bundle
    .venv/bin/python benchmarks/objectives_scifact_cross_encoder.py prepare --bundle .bundle
    # 2. anywhere with torch + transformers (CUDA if present): train every run, score dev and test
    python benchmarks/objectives_scifact_cross_encoder.py train --bundle .bundle --out OUT
    # 3. here: metrics, fusion weight chosen on dev, seen/unseen subsets -> results JSON + PNG
    .venv/bin/python benchmarks/objectives_scifact_cross_encoder.py report --scores OUT --hardware "..."

Step 2 resumes: pointed at an ``--out`` that holds an earlier job's scores (same recipe and
candidates, checked), it trains only the runs not yet there, e.g. ``--runs ranklist:bm25-rr``, and
records per run the hardware that trained it. The committed table's scores and training log are in
``benchmarks/results/objectives_scifact_cross_encoder/``: 8 runs from one H200 job (cut by the device's time
limit), the ninth (RankList + bm25-rr) from a later H200 job resumed on a copy of that folder:

    cp -r benchmarks/results/objectives_scifact_cross_encoder OUT
    python benchmarks/objectives_scifact_cross_encoder.py train --bundle .bundle --out OUT --runs ranklist:bm25-rr

A second job, ``benchmarks/results/objectives_scifact_cross_encoder_cpu/``, trained the fixed losses on the
2-core CPU with a shorter recipe (its rows say so: max length 128, 8 lists per step, best-dev checkpoint),
one run at a time into the same ``--out``::

    python benchmarks/objectives_scifact_cross_encoder.py train --bundle .bundle --out OUT --device cpu --runs pointwise \
        --steps 150 --eval-steps 25 --patience 3 --max-length 128 --lists-per-step 8 --budget-s 1500
    .venv/bin/python benchmarks/objectives_scifact_cross_encoder.py report --scores benchmarks/results/objectives_scifact_cross_encoder \
        --scores OUT --bundle .bundle --hardware "..."

Two more CPU jobs use the same recipe with a longer warm-up + decay schedule (``--budget-s`` fixed it
at 374 steps): ``..._cpu_long/`` (learning rate 5e-5) and ``..._cpu_long_lr2e-5/`` (2e-5; its folder
was seeded with the first job's candidates and untrained scores, which are the same for every rate)::

    python benchmarks/objectives_scifact_cross_encoder.py train --bundle .bundle --out OUT --device cpu --runs pointwise \
        --steps 450 --eval-steps 25 --patience 4 --max-length 128 --lists-per-step 8 --budget-s 20000 [--learning-rate 2e-5]

``--dtype auto`` (the default) trains and scores under bf16 autocast where bf16 is native (CUDA, or a
CPU with AVX-512 BF16/AMX) and in fp32 elsewhere: on an AVX2-only CPU the first emulated bf16 step had not
finished after eight minutes. The jobs above ran bf16 autocast (their logs say ``bf16: true``). Precision, like the
device, is recorded per run, so a job may be continued in another precision (seeds 1 and 2 of ``..._cpu_long`` ran fp32
on an AVX2 CPU, same flags plus ``--runs pointwise#1,listnet#1,... --dtype fp32 --checkpoints DIR``); every other
recipe change is refused. A seed-mean row names every precision and hardware it averages.

``..._cpu_200steps/`` is ListMLE on a 200-step schedule (fp32, AVX2 CPU; its folder seeded with the untrained scores):
the decay then spans the steps that the 374-step job ran before its dev curve flattened.
``..._cpu_long_listmle_random_ties/`` is ListMLE with ``--listmle-ties random`` and otherwise the ``..._cpu_long``
flags (fp32, AVX2 CPU; folder seeded the same way).

The converged table in one GPU call (prepared for a lent H100/H200; step 1 runs here first and the
bundle travels with the working tree; every run trains until dev nDCG@10 stops improving, keeps its
best checkpoint, and the three best objectives by dev are rerun with seeds 1 and 2; ``--budget-s``
caps the steps so that the whole job fits one 600 s call; rows are written as each run finishes and
a second call resumes)::

    python benchmarks/objectives_scifact_cross_encoder.py train --bundle .bundle --out OUT --device cuda \
        --steps 600 --eval-steps 25 --patience 4 --dev-eval-queries 80 --dev-eval-top-k 30 \
        --best-seeds 3 --extra-seeds 1,2 --budget-s 540

``--checkpoints DIR`` (outside the repository) trains each run there with a checkpoint at every dev
evaluation: a job killed mid-run continues from its last checkpoint when started again with the same
flags, so a long CPU run can span several sessions; one killed while scoring does not train again.

``--save-models DIR`` also keeps each trained model as a cross-encoder directory (``serving_latency.py
--cuda-bundle`` timed the RankList + bm25-rr one that way).

Step 2 imports only torch, transformers and ``train/`` (``rankers.base`` needs polars at import;
where polars is not installed a stand-in module is enough, nothing of it is called there).
Protocol, split and seed are those of ``objectives_scifact.py`` (80% of SciFact train queries with a
positive for training, 20% held out to choose the fusion weight; never test).
Results: ``benchmarks/results/objectives_scifact_cross_encoder.json`` (+ ``.png``); the hardware that
trained is recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

RUNS = ["lipo", "ranklist", "pointwise", "lambdaloss", "listnet", "listmle", "ranknet", "lipo:bm25-rr", "ranklist:bm25-rr"]
"""Training order: the headline objectives first, so a run cut short still returns them."""

BUNDLE_FILE = "scifact_lists.json.gz"
START_DIR = "start-model"
SCORES_FILE = "scores.npz"
LOG_FILE = "train_log.json"
MODEL_PARTS = "lipo-model.tar.part-"


@dataclass
class TrainConfig:
    """The budget of step 2, identical for every objective."""

    steps: int = 150
    lists_per_step: int = 16
    list_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = 256
    seed: int = 0
    bf16: bool = True
    score_batch: int = 256
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    budget_s: float | None = None  # lower ``steps`` (the same for every run) so all runs fit this many seconds
    limit_queries: int | None = None  # smoke tests: cap fit/dev/test queries
    pooling: str = "cls"  # cross-encoder read-out: cls or mean (see rankers/cross_encoder.py)
    eval_steps: int = 0  # dev nDCG@10 every N steps, best checkpoint kept, stop after ``patience`` flat evaluations
    patience: int = 3
    dev_eval_queries: int = 40  # the first N dev queries ...
    dev_eval_top_k: int = 20  # ... and their BM25 top-k, scored at each evaluation (the fusion weight uses all of dev)
    listmle_ties: str = "separate"  # ListMLELoss(ties=...): "separate" (label-separating positions) or "random"
    best_seeds: int = 0  # then rerun the best N runs (by best dev nDCG@10 of the curve) ...
    extra_seeds: tuple[int, ...] = (1, 2)  # ... with these seeds (runs "objective[:curriculum]#seed")


def parse_run(run: str) -> tuple[str, str | None, int | None]:
    """``objective[:curriculum][#seed]`` -> (objective, curriculum, seed or None for the config's)."""
    spec, _, seed = run.partition("#")
    objective, _, curriculum = spec.partition(":")
    return objective, curriculum or None, int(seed) if seed else None


# -- 1. prepare (here: BM25 through pyserini) ------------------------------------------------------
def prepare(bundle: Path, top_k: int = 100, seed: int = 0, fp16_weights: bool = True) -> Path:
    """Write the bundle: queries, train qrels, BM25 top-``k`` of every fit/dev/test query, the texts of
    every document they name, and the start weights (fp16 safetensors halve the transfer size)."""
    from safetensors.torch import load_file, save_file

    from rankwise.eval.bundle import build_bundle, write_bundle
    from rankwise.rankers.bi_encoder import default_encoder_path

    write_bundle(bundle / BUNDLE_FILE, build_bundle("scifact", top_k, seed))
    src, dst = default_encoder_path(), bundle / START_DIR
    dst.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() if fp16_weights and v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return bundle


# -- 2. train and score (anywhere: torch + transformers) ------------------------------------------
def _load_bundle(bundle: Path, limit: int | None) -> dict:
    from rankwise.eval.bundle import read_bundle

    return read_bundle(bundle / BUNDLE_FILE, limit)


def _pairs(doc: dict, split: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Flattened (qid, docid, query, doc text) of ``split``'s BM25 candidates, in bundle order."""
    qids, docids, queries, texts = [], [], [], []
    for q, text in doc["queries"][split].items():
        for d, _, _ in doc["bm25"][split][q]:
            qids.append(q), docids.append(d), queries.append(text), texts.append(doc["docs"][d])
    return qids, docids, queries, texts


@torch.inference_mode()
def score_pairs(ranker, queries: list[str], texts: list[str], batch: int, bf16: bool) -> np.ndarray:
    """Scores of ``(queries[i], texts[i])`` in fixed-size batches: ``(N,)`` float32."""
    ranker.model.eval()
    device = next(ranker.model.parameters()).device
    out = []
    for i in range(0, len(queries), batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(ranker.logits(queries[i:i + batch], texts[i:i + batch]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _fresh_model(bundle: Path, cfg: TrainConfig, device: str, weights: Path | None = None):
    """The start model (or, with ``weights``, a saved checkpoint of a run) in fp32 on ``device``."""
    from rankwise.rankers.cross_encoder import CrossEncoder

    return CrossEncoder.from_pretrained(weights or bundle / START_DIR, max_length=cfg.max_length, dtype=torch.float32,
                                        pooling=cfg.pooling, device=device)


def _save_parts(ranker, out: Path, part_mb: int = 15) -> list[str]:
    """The trained weights as fp16 safetensors in a tar cut into ``part_mb`` MB files (transfer limits)."""
    import io
    import tarfile

    from safetensors.torch import save as save_bytes

    state = {k: v.detach().half().cpu().contiguous() for k, v in ranker.model.state_dict().items()}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("model.safetensors", save_bytes(state, metadata={"format": "pt"})),
                           ("rankwise.json", json.dumps({"kind": "cross-encoder", "max_length": ranker.max_length}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob, size, names = raw.getvalue(), part_mb * 1024 * 1024, []
    for i in range(0, len(blob), size):
        names.append(f"{MODEL_PARTS}{i // size:02d}")
        (out / names[-1]).write_bytes(blob[i:i + size])
    return names


def _precision(bf16: bool) -> str:
    """A run's recorded precision: ``bf16`` (autocast over fp32 weights) or ``fp32``."""
    return "bf16" if bf16 else "fp32"


def _resume(out: Path, cfg: TrainConfig, scores: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """The log and scores of an earlier ``train`` into ``out``, checked to share this job's recipe and
    candidates. The earlier job's step count wins (its ``--budget-s`` fixed it); ``cfg.runs`` is widened
    so the log lists every run asked for, old and new. Precision, like the device, may differ between
    jobs (a seed rerun in fp32 on a CPU without native bf16): each run records its own."""
    log = json.loads((out / LOG_FILE).read_text())
    free = ("runs", "budget_s", "steps", "bf16")
    new = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k not in free}
    defaults = json.loads(json.dumps(asdict(TrainConfig())))  # a knob added after the job ran: it ran the default
    old = {k: log["config"].get(k, defaults[k]) for k in new}
    if old != new:
        diff = ", ".join(f"{k}: {old.get(k)} vs {new[k]}" for k in new if old.get(k) != new[k])
        raise SystemExit(f"{out / LOG_FILE}: config differs from this job ({diff}); use another --out")
    saved = dict(np.load(out / SCORES_FILE))
    for key in ("dev_qid", "dev_docid", "test_qid", "test_docid"):
        if not np.array_equal(saved[key], scores[key]):
            raise SystemExit(f"{out / SCORES_FILE}: field {key} differs from this bundle's candidates; use another --out")
    for run in log["runs"]:  # runs logged before per-run hardware was recorded ran on the job's hardware
        for k in ("device", "gpu", "torch"):
            log["runs"][run].setdefault(k, log.get(k))
        log["runs"][run].setdefault("precision", _precision(log["config"]["bf16"]))
    log["config"]["bf16"] = cfg.bf16  # the precision of the runs this job adds
    cfg.steps, cfg.budget_s = log["config"]["steps"], None
    cfg.runs = list(dict.fromkeys([*log["config"]["runs"], *cfg.runs]))
    log["config"]["runs"] = cfg.runs
    return log, saved


def train_all(bundle: Path, out: Path, cfg: TrainConfig, device: str, save_models: Path | None = None,
              checkpoints: Path | None = None) -> dict:
    """Train one model per run of ``cfg.runs``, score dev and test after each; results are rewritten
    to ``out`` after every run so a job cut short keeps what finished. ``save_models``: also keep each
    trained model as a cross-encoder directory ``save_models/<objective>[-<curriculum>]`` (fp32).
    ``checkpoints``: train each run in ``checkpoints/<run>`` with a checkpoint (weights + optimiser)
    at every dev evaluation, so a job killed mid-run continues from its last checkpoint, and one
    killed while scoring does not train again; the folder of a run is removed once its scores are in
    ``out``. Keep it outside the repository (about 270 MB a run for MiniLM)."""
    from rankwise.train.cross_encoder_trainer import CrossEncoderTrainer, CrossEncoderTrainerConfig
    from rankwise.train.data import HardNegativeLists
    from rankwise.rankers.base import Hit

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rankwise-objectives-"))  # model dirs stay out of ``out``
    doc = _load_bundle(bundle, cfg.limit_queries)
    by_text = {doc["queries"]["fit"][q]: doc["bm25"]["fit"][q] for q in doc["queries"]["fit"]}
    lists = HardNegativeLists(
        doc["queries"]["fit"], doc["qrels"]["train"], doc["docs"],
        lambda query, k: [Hit(d, s, r) for d, s, r in by_text[query][:k]],
        list_size=cfg.list_size, negatives_from=doc["top_k"], epochs=None, seed=cfg.seed,
    )
    pairs = {split: _pairs(doc, split) for split in ("dev", "test")}
    evaluator = None
    if cfg.eval_steps:
        from rankwise.train.dev_eval import dev_ndcg_evaluator

        dev_q = dict(list(doc["queries"]["dev"].items())[: cfg.dev_eval_queries])
        evaluator = dev_ndcg_evaluator(
            dev_q, {q: [(d, doc["docs"][d]) for d, _, _ in doc["bm25"]["dev"][q][: cfg.dev_eval_top_k]] for q in dev_q},
            doc["qrels"]["train"])
    scores: dict[str, np.ndarray] = {f"{s}_{k}": np.asarray(v) for s, p in pairs.items() for k, v in zip(("qid", "docid"), p[:2])}
    hardware = {"device": device, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                "torch": torch.__version__, "precision": _precision(cfg.bf16)}
    log = {"config": asdict(cfg), **hardware, "runs": {}}
    if (out / LOG_FILE).exists():  # resume: keep what an earlier job (maybe on other hardware) finished
        log, scores = _resume(out, cfg, scores)
        print(f"resuming in {out}: {', '.join(log['runs']) or 'no runs'} done", flush=True)

    def flush() -> None:
        np.savez_compressed(out / SCORES_FILE, **scores)
        (out / LOG_FILE).write_text(json.dumps(log, indent=1))

    torch.manual_seed(cfg.seed)
    untrained = _fresh_model(bundle, cfg, device)
    t0 = time.perf_counter()
    for split, (_, _, queries, texts) in pairs.items():
        if f"untrained_{split}" not in scores:
            scores[f"untrained_{split}"] = score_pairs(untrained, queries, texts, cfg.score_batch, cfg.bf16)
    score_s = time.perf_counter() - t0
    if cfg.budget_s:  # time a few steps, then give every run the same number of steps
        probe = CrossEncoderTrainerConfig(str(work / "probe"), max_steps=6, lists_per_step=cfg.lists_per_step,
                                          bf16=cfg.bf16, progress=False)
        t0 = time.perf_counter()
        CrossEncoderTrainer(untrained, lists, probe).train()
        step_s = (time.perf_counter() - t0) / 6
        fit = int((cfg.budget_s / (len(cfg.runs) + cfg.best_seeds * len(cfg.extra_seeds)) - score_s) / step_s)
        log["budget"] = {"budget_s": cfg.budget_s, "step_s": round(step_s, 3), "score_s": round(score_s, 1),
                         "steps_asked": cfg.steps, "steps_fitting": fit}
        cfg.steps = max(50, min(cfg.steps, fit))
        log["config"]["steps"] = cfg.steps
        print(f"step {step_s:.3f}s, scoring {score_s:.1f}s -> {cfg.steps} steps per run", flush=True)
    del untrained
    flush()
    def pending() -> list[str]:
        todo = [r for r in cfg.runs if r not in log["runs"]]
        if not todo and cfg.best_seeds:  # the seed reruns of the best runs, chosen on dev once all have run
            ranked = sorted((r for r in cfg.runs if "#" not in r and log["runs"][r].get("best")),
                            key=lambda r: -log["runs"][r]["best"]["dev"])[: cfg.best_seeds]
            todo = [f"{r}#{seed}" for r in ranked for seed in cfg.extra_seeds if f"{r}#{seed}" not in log["runs"]]
        return todo

    while pending():
        run = pending()[0]
        objective, curriculum, run_seed = parse_run(run)
        seed = cfg.seed if run_seed is None else run_seed
        torch.manual_seed(seed)
        run_dir = (checkpoints or work) / run.replace(":", "-").replace("#", "-")
        trained = checkpoints is not None and (run_dir / "training_log.json").is_file()  # killed while scoring
        resume_from = CrossEncoderTrainer.latest_checkpoint(run_dir) if checkpoints is not None and not trained else None
        ranker = _fresh_model(bundle, cfg, device, run_dir if trained else resume_from)
        tcfg = CrossEncoderTrainerConfig(
            str(run_dir), objective=objective, curriculum=curriculum, max_steps=cfg.steps,
            objective_kwargs={"ties": cfg.listmle_ties} if objective == "listmle" else {},
            lists_per_step=cfg.lists_per_step, learning_rate=cfg.learning_rate, seed=seed, bf16=cfg.bf16,
            log_every=25, progress=True, eval_steps=cfg.eval_steps, patience=cfg.patience,
            save_steps=(cfg.eval_steps or 25) if checkpoints is not None else 0, keep_checkpoints=1,
        )
        run_lists = lists if run_seed is None else HardNegativeLists(
            doc["queries"]["fit"], doc["qrels"]["train"], doc["docs"],
            lambda query, k: [Hit(d, s, r) for d, s, r in by_text[query][:k]],
            list_size=cfg.list_size, negatives_from=doc["top_k"], epochs=None, seed=seed,
        )
        trainer = CrossEncoderTrainer(ranker, run_lists, tcfg, evaluator=evaluator)
        if resume_from is not None:
            trainer.resume(resume_from)
            print(f"{run}: resuming from {resume_from} (step {trainer.step})", flush=True)
        t0 = time.perf_counter()
        summary = json.loads((run_dir / "training_log.json").read_text()) if trained else trainer.train()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        # a resumed run: the seconds of every part (each checkpoint's trainer state does not keep them)
        train_s = summary["train_s"] if trained else time.perf_counter() - t0
        t1 = time.perf_counter()
        for split, (_, _, queries, texts) in pairs.items():
            scores[f"{run}_{split}"] = score_pairs(ranker, queries, texts, cfg.score_batch, cfg.bf16)
        log["runs"][run] = {"train_s": round(train_s, 1), "score_s": round(time.perf_counter() - t1, 1),
                            "steps": summary["steps"], "history": summary["history"], "curve": summary["curve"],
                            "best": summary["best"], "stopped_early": summary["stopped_early"], "seed": seed, **hardware}
        if resume_from is not None:  # train_s then counts only the part after this step
            log["runs"][run]["resumed_from_step"] = int(resume_from.name.split("-")[1])
        print(f"{run}: {train_s:.1f}s, loss {summary['history'][0]['loss']:.4f} -> {summary['final_loss']:.4f}", flush=True)
        if run == "lipo":
            log["runs"][run]["weights"] = _save_parts(ranker, out)
        flush()
        if save_models:
            ranker.save_pretrained(save_models / run.replace(":", "-"), training={"objective": objective, "curriculum": curriculum or None,
                                                                                   "source": "benchmarks/objectives_scifact_cross_encoder.py"})
        shutil.rmtree(run_dir, ignore_errors=True)
        del ranker, trainer
    return log


def unpack_model(scores_dir: Path, bundle: Path, dest: Path) -> Path:
    """Rebuild the trained LiPO-λ cross-encoder from its parts as an fp32 rankwise model directory."""
    import io
    import tarfile

    from rankwise.rankers.cross_encoder import CrossEncoder

    blob = b"".join(p.read_bytes() for p in sorted(scores_dir.glob(f"{MODEL_PARTS}*")))
    if not blob:
        raise FileNotFoundError(f"{scores_dir}: no {MODEL_PARTS}* files")
    work = Path(tempfile.mkdtemp(prefix="rankwise-unpack-"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extract("model.safetensors", work)
        meta = json.load(tar.extractfile("rankwise.json"))
    for f in (bundle / START_DIR).iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, work / f.name)
    ce = CrossEncoder.from_pretrained(work, max_length=meta["max_length"], dtype=torch.float32)
    ce.save_pretrained(dest, training={"objective": "lipo", "source": "benchmarks/objectives_scifact_cross_encoder.py"})
    shutil.rmtree(work, ignore_errors=True)
    return dest


# -- 3. report (here) ----------------------------------------------------------------------------
METRICS = ("ndcg@10", "recall@10", "mrr@10")


def _bi_encoder_scores(doc: dict, qids: np.ndarray, docids: np.ndarray, split: str) -> np.ndarray:
    """The bundled all-MiniLM-L6-v2 cosine of every (query, candidate) pair (document vectors cached)."""
    from rankwise.rankers.bi_encoder import BiEncoder

    enc = BiEncoder()
    uq, ud = sorted(set(qids.tolist())), sorted(set(docids.tolist()))
    qv = dict(zip(uq, enc.encode_queries([doc["queries"][split][q] for q in uq])))
    dv = dict(zip(ud, enc.encode_documents([doc["docs"][d] for d in ud], progress=True)))
    return np.asarray([float(qv[q] @ dv[d]) for q, d in zip(qids.tolist(), docids.tolist())])


def report(scores_dirs: list[Path], bundle: Path, hardware: str) -> list[dict]:
    """Metrics of every run alone, fused with BM25, and fused with BM25 and the bi-encoder (every
    weight chosen on dev), on all test queries and on the seen/unseen-positive subsets; writes the
    results JSON and PNGs. Each scores folder is one training job (its own recipe and hardware).
    Every row after the untrained fusion (BM25 + bi-encoder, the main job's default) carries its
    paired nDCG@10 difference from it on the same queries, with a 95% bootstrap interval and a
    randomization-test p-value (``vs_untrained_fusion_*``, :mod:`eval.significance`); a seed-mean row
    compares the per-query mean of its seeds."""
    import polars as pl

    from rankwise.eval.fusion_fit import fit_fusion_weights
    from rankwise.eval.metrics import evaluate, run_from_candidates
    from rankwise.eval.significance import paired_comparison
    from rankwise.eval.report import RESULTS_DIR, plot_bars, plot_lines, print_table, write_results
    from rankwise.eval.subsets import positive_overlap_subsets
    from rankwise.rankers.fusion import fuse_many

    doc = _load_bundle(bundle, None)
    qrels_test = doc["qrels"]["test"]
    qrels_dev = {q: doc["qrels"]["train"][q] for q in doc["queries"]["dev"]}
    subsets = {"all": qrels_test, **positive_overlap_subsets(doc["qrels"]["train"], qrels_test)}
    rows, curves, jobs = [], [], {}

    def frame(data, split: str, values: np.ndarray) -> pl.DataFrame:
        df = pl.DataFrame({"qid": data[f"{split}_qid"], "docid": data[f"{split}_docid"], "score": values.astype(np.float64)})
        return df.with_columns(pl.col("score").rank("ordinal", descending=True).over("qid").cast(pl.Int64).alias("rank"))

    untrained_fusion: dict = {}  # the main job's default (BM25 + bi-encoder), every later row is compared with it
    run_of: dict[int, dict] = {}  # id(row) -> its test run, for the seed means' paired comparison

    def add(name: dict, run_test: pl.DataFrame, extra: dict) -> None:
        run = run_from_candidates(run_test)
        for subset, qrels in subsets.items():
            versus = paired_comparison(qrels, untrained_fusion, run).as_fields("vs_untrained_fusion") if untrained_fusion else {}
            rows.append({"dataset": "scifact", **name, "subset": subset, "queries": len(qrels), **evaluate(qrels, run, METRICS),
                         **extra, **versus})
            run_of[id(rows[-1])] = run

    base = None
    for scores_dir in scores_dirs:
        log = json.loads((scores_dir / LOG_FILE).read_text())
        data = np.load(scores_dir / SCORES_FILE)
        cfg = log["config"]
        job = scores_dir.name
        jobs[job] = {"config": cfg, "device": log["device"], "gpu": log["gpu"], "torch": log["torch"],
                     "missing_runs": [r for r in cfg["runs"] if r not in log["runs"]]}
        bm25, bi = {}, {}
        for s in ("dev", "test"):
            score = {(q, d): sc for q, hits in doc["bm25"][s].items() for d, sc, _ in hits}
            bm25[s] = frame(data, s, np.asarray([score[q, d] for q, d in zip(data[f"{s}_qid"], data[f"{s}_docid"])]))
            bi[s] = frame(data, s, _bi_encoder_scores(doc, data[f"{s}_qid"], data[f"{s}_docid"], s))
        if base is None:  # the baselines, once: BM25 alone, the bi-encoder alone and fused (weight on dev)
            base = scores_dir
            add({"model": "bm25", "objective": "none", "curriculum": "none", "fusion": "none"}, bm25["test"], {})
            add({"model": "bi-encoder", "objective": "untrained", "curriculum": "none", "fusion": "none"}, bi["test"], {})
            (w, _), dev_value = fit_fusion_weights([bm25["dev"], bi["dev"]], qrels_dev)
            fused = fuse_many([bm25["test"], bi["test"]], [w, 1 - w])
            add({"model": "bi-encoder", "objective": "untrained", "curriculum": "none", "fusion": "zscore", "fusion_weight": w},
                fused, {"dev_ndcg@10_fused": dev_value})
            untrained_fusion.update(run_from_candidates(fused))
        recipe = {"job": job, "max_length": cfg["max_length"], "lists_per_step": cfg["lists_per_step"], "learning_rate": cfg["learning_rate"],
                  "pooling": cfg.get("pooling", "cls"), "selection": "best-dev" if cfg.get("eval_steps") else "last-step"}
        frames: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}

        def hardware_of(info: dict) -> str:
            return info.get("gpu") or info.get("device") or log["device"]

        for run in ["untrained", *log["runs"]]:
            if f"{run}_test" not in data:
                continue
            objective, curriculum, _ = parse_run(run)
            info = log["runs"].get(run, {})
            dev, test = frame(data, "dev", data[f"{run}_dev"]), frame(data, "test", data[f"{run}_test"])
            frames[run] = dev, test
            extra = {**recipe, "seed": info.get("seed", cfg["seed"]), "train_s": info.get("train_s", 0.0), "steps": info.get("steps", 0),
                     "final_loss": info["history"][-1]["loss"] if info.get("history") else None,
                     "hardware": hardware_of(info), "precision": info.get("precision", _precision(cfg["bf16"]))}
            if info.get("best"):
                extra |= {"best_step": info["best"]["step"], "best_dev_curve_ndcg@10": info["best"]["dev"]}
            if objective == "listmle":
                extra["listmle_ties"] = cfg.get("listmle_ties", "separate")
            name = {"model": "cross-encoder", "objective": objective, "curriculum": curriculum or "none"}
            add({**name, "fusion": "none"}, test, extra)
            (w, _), dev_value = fit_fusion_weights([bm25["dev"], dev], qrels_dev)
            add({**name, "fusion": "zscore", "fusion_weight": w}, fuse_many([bm25["test"], test], [w, 1 - w]),
                {**extra, "dev_ndcg@10_fused": dev_value})
            weights, dev_value = fit_fusion_weights([bm25["dev"], bi["dev"], dev], qrels_dev)
            add({**name, "fusion": "zscore+bi-encoder", "fusion_weight": weights[0], "fusion_weight_bi_encoder": weights[1],
                 "fusion_weight_cross_encoder": weights[2]}, fuse_many([bm25["test"], bi["test"], test], weights),
                {**extra, "dev_ndcg@10_fused": dev_value})
            for point in info.get("curve", []):
                curves.append({"run": f"{job}/{run}", "step": point["step"], "dev_ndcg@10": point["dev"]})
        pair = sorted((r for r in log["runs"] if "#" not in r and log["runs"][r].get("best") and r in frames),
                      key=lambda r: -log["runs"][r]["best"]["dev"])[:2]  # the job's two best runs, by dev
        if len(pair) == 2:  # both fused with BM25 and the bi-encoder, every weight on dev
            weights, dev_value = fit_fusion_weights([bm25["dev"], bi["dev"], *(frames[r][0] for r in pair)], qrels_dev)
            add({"model": "cross-encoder", "objective": "+".join(pair), "curriculum": "none", "fusion": "zscore+bi-encoder",
                 "fusion_weight": weights[0], "fusion_weight_bi_encoder": weights[1], "fusion_weight_cross_encoder": weights[2],
                 "fusion_weight_cross_encoder_2": weights[3]},
                fuse_many([bm25["test"], bi["test"], *(frames[r][1] for r in pair)], weights),
                {**recipe, "seed": cfg["seed"], "runs": "+".join(pair), "selection": "two best runs by dev, each at its best-dev step",
                 "hardware": hardware_of(log["runs"][pair[0]]),
                 "dev_ndcg@10_fused": dev_value})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("model") == "cross-encoder" and r.get("objective") != "untrained":
            groups.setdefault(tuple(r.get(k) for k in ("job", "objective", "curriculum", "fusion", "subset")), []).append(r)
    for group in groups.values():  # seed means where a run has several seeds
        if len({r["seed"] for r in group}) > 1:
            mean = {k: v for k, v in group[0].items() if not isinstance(v, float) or k in ("fusion_weight",)}
            for k in ("steps", "best_step"):  # per seed, in seed order, where the seeds differ
                if len({r.get(k) for r in group}) > 1:
                    mean[k] = "/".join(str(r.get(k, "-")) for r in sorted(group, key=lambda r: r["seed"]))
            mean |= {m: float(np.mean([r[m] for r in group])) for m in METRICS}
            mean |= {f"{m}_std": float(np.std([r[m] for r in group])) for m in METRICS}
            mean["seed"], mean["seeds"] = f"mean of {len(group)}", len(group)
            mean["precision"] = "+".join(sorted({str(r.get("precision")) for r in group}))
            mean["hardware"] = " + ".join(sorted({str(r.get("hardware")) for r in group}))
            mean.pop("fusion_weight", None)
            mean |= paired_comparison(subsets[mean["subset"]], untrained_fusion,
                                      [run_of[id(r)] for r in group]).as_fields("vs_untrained_fusion")
            rows.append(mean)
    protocol = (
        f"SciFact test (300 queries), BM25 top-{doc['top_k']} reranked by all-MiniLM-L6-v2 fine-tuned as a cross-encoder "
        "(new head; pooling, max length, steps and hardware per row); training on 80% of SciFact train queries (positives + "
        "sampled BM25 negatives), AdamW, warm-up then linear decay; 'best-dev' rows keep the checkpoint with the best nDCG@10 on "
        "held-out train queries and stop at a plateau, 'last-step' rows ran a fixed number of steps; z-score fusion weights (BM25, "
        "and BM25 + the bundled bi-encoder's cosine) chosen on the other 20% of train queries (never test); subsets split test "
        "queries by whether a relevant document is also a train positive (one shared corpus)"
    )
    shown = [r for r in rows if r["subset"] == "all"]
    print_table(shown, f"cross-encoder objectives on SciFact - {protocol}")
    print_table([r for r in rows if r["subset"] != "all" and r["fusion"] != "none" or r["model"] == "bm25"], "by subset")
    write_results("objectives_scifact_cross_encoder", rows, protocol, hardware=hardware, jobs=jobs, curves=curves)
    plot_bars([r for r in shown if r["fusion"] != "none" or r["model"] == "bm25"],
              ["model", "objective", "curriculum", "fusion", "job", "seed"], "ndcg@10", RESULTS_DIR / "objectives_scifact_cross_encoder.png",
              title="SciFact test nDCG@10, MiniLM cross-encoder fused with BM25 (and the bi-encoder)")
    if curves:
        plot_lines(curves, "step", "dev_ndcg@10", "run", RESULTS_DIR / "objectives_scifact_cross_encoder_curves.png",
                   title="dev nDCG@10 while training (held-out SciFact train queries)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="BM25 lists/candidates + start weights -> bundle (needs pyserini)")
    p.add_argument("--bundle", type=Path, required=True)
    t = sub.add_parser("train", help="train every objective and score dev/test (torch + transformers only)")
    t.add_argument("--bundle", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--device", default="auto", help="auto (CUDA when available), cuda or cpu")
    t.add_argument("--steps", type=int, default=TrainConfig.steps)
    t.add_argument("--runs", default=",".join(RUNS), help="objective[:curriculum], comma separated")
    t.add_argument("--limit-queries", type=int, default=None, help="smoke test: first N queries of each split")
    t.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    t.add_argument("--lists-per-step", type=int, default=TrainConfig.lists_per_step)
    t.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="training and scoring precision: bf16 autocast over fp32 weights, or fp32; auto: bf16 where it is "
                        "native (CUDA, or a CPU with AVX-512 BF16/AMX), fp32 elsewhere (emulated bf16 is many times slower)")
    t.add_argument("--budget-s", type=float, default=None, help="fit every run in this many seconds (fewer steps, same for all)")
    t.add_argument("--save-models", type=Path, default=None, help="also keep every trained model as a directory here")
    t.add_argument("--checkpoints", type=Path, default=None,
                   help="train each run here with a checkpoint at every dev evaluation, so a killed job continues mid-run "
                        "(outside the repository: about 270 MB a run)")
    t.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    t.add_argument("--pooling", choices=("cls", "mean"), default=TrainConfig.pooling)
    t.add_argument("--listmle-ties", choices=("separate", "random"), default=TrainConfig.listmle_ties,
                   help="ListMLE's tied labels: only label-separating positions contribute, or a random order per step")
    t.add_argument("--eval-steps", type=int, default=0, help="dev nDCG@10 every N steps; best checkpoint; early stop")
    t.add_argument("--patience", type=int, default=TrainConfig.patience)
    t.add_argument("--dev-eval-queries", type=int, default=TrainConfig.dev_eval_queries)
    t.add_argument("--dev-eval-top-k", type=int, default=TrainConfig.dev_eval_top_k)
    t.add_argument("--best-seeds", type=int, default=0, help="after all runs, rerun the best N (by dev) with --extra-seeds")
    t.add_argument("--extra-seeds", default="1,2")
    r = sub.add_parser("report", help="metrics, fusion on dev, subsets -> results JSON + PNG")
    r.add_argument("--scores", type=Path, required=True, action="append", help="a train job's --out (repeat for several jobs)")
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--hardware", required=True, help="what ran step 2, e.g. 'NVIDIA H200 (lent device)'")
    r.add_argument("--unpack", type=Path, default=None, help="also rebuild the LiPO-λ model as an fp32 directory here")
    args = parser.parse_args()
    if args.step == "prepare":
        print(prepare(args.bundle))
    elif args.step == "train":
        from rankwise.core.device import bf16_native, resolve_device

        device = resolve_device(args.device)
        bf16 = args.dtype == "bf16" or (args.dtype == "auto" and bf16_native(device))
        print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} on {device} (--dtype {args.dtype})", flush=True)
        cfg = TrainConfig(steps=args.steps, runs=args.runs.split(","), limit_queries=args.limit_queries,
                          max_length=args.max_length, lists_per_step=args.lists_per_step, bf16=bf16,
                          budget_s=args.budget_s, learning_rate=args.learning_rate, pooling=args.pooling,
                          eval_steps=args.eval_steps, patience=args.patience, dev_eval_queries=args.dev_eval_queries,
                          dev_eval_top_k=args.dev_eval_top_k, best_seeds=args.best_seeds, listmle_ties=args.listmle_ties,
                          extra_seeds=tuple(int(x) for x in args.extra_seeds.split(",") if x))
        train_all(args.bundle, args.out, cfg, str(device), args.save_models, args.checkpoints)
    else:
        report(args.scores, args.bundle, args.hardware)
        if args.unpack:
            print(unpack_model(args.scores[0], args.bundle, args.unpack))


if __name__ == "__main__":
    main()
