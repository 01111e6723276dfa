"""Sequential recommenders at catalog scale: train-step time, full-ranking evaluation and serving latency
of SASRec and HSTU (sampled softmax, 128 negatives) on synthetic catalogs of 10k, 100k and 1M items.

What it measures, per (model, catalog size), each pair in a fresh subprocess:
- Data: ``users`` synthetic users (default 100k), each with a history of ``HISTORY`` = 20-100 items
  (uniform length), items drawn i.i.d. from a Zipf popularity p(rank r) ∝ r^-0.8 (``ZIPF_EXPONENT``)
  over a seeded random permutation of the catalog, built directly as the
  :class:`~rankwise.recsys.data.SequenceData` the library trains on (item ids ``"1".."N"``, no texts).
- Training (a): the library's own step (:class:`~rankwise.recsys.trainer.RecTrainer`: AdamW lr 1e-3,
  gradient clip 1.0, batch 128, the most recent window per user) with each model's default config (d 50,
  2 layers, 1 head, max length 200, cosine / τ 0.05) and ``loss="sampled"``, 128 uniform negatives.
  ``train_step_ms`` is the median wall time between consecutive ``calculate_loss`` calls (batch
  building, forward, backward, clip, AdamW) over ``steps`` steps after ``warmup`` steps;
  ``epoch_s_linear`` = that median × ⌈users / batch⌉ (linear, not run). The full softmax is not
  run: ``full_softmax_logits_gb`` is the size of one copy of its (positions × items) float32 logits
  for the measured mean positions per step (backward needs at least as much again).
  ``sampled_path`` says how :class:`~rankwise.recsys._seq.NextItemLogits` computed the sampled logits
  (``score-matrix``: one positions × items product, below ``FULL_MATRIX_MAX`` scores; ``gather``: the
  1 + 128 item rows per position, whose cost grows with positions, not items), so the step time can
  jump where the score-matrix path ends (measured: ``docs/notes.md``).
- Evaluation (b): :func:`~rankwise.recsys.evaluate.evaluate_full_ranking` (test split, batch 256, the
  user's history excluded) over ``eval_users`` seeded random users. By itself the library scores the
  catalog in slices of 262,144 items (two passes: target scores, then counts) only above 256 × items >
  64M scores (from 262,145 items on) and in one dense (256 × items) matrix below; the benchmark forces
  the sliced path at every size (``--eval-chunk 262144``, the same slice) so all sizes run the code that
  1M and 10M run (``--eval-chunk 0``: the library's own rule; the row's ``eval_chunk`` is then 0 below
  the threshold). ``eval_all_users_s_linear`` = the sample's time × users / eval_users: linear in users,
  not run.
- Serving (c): the trained model is saved with ``save_pretrained`` and loaded through
  :meth:`rankwise.serving.api.Recommender.load` (PyTorch user tower + faiss ``IndexFlatIP`` over the
  item vectors; always on the CPU: the PyTorch path of ``Recommender.load`` has no GPU option).
  ``p50_ms`` / ``p99_ms``: single ``recommend(history, k=10)`` calls over ``requests`` users' test
  histories (after 5 warm-up calls); ``many_users_per_s``: ``recommend_many`` over the eval sample
  in batches of 256; one thread (``--serve-threads``) unless asked.
- Memory: peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of the subprocess
  per phase; before each phase the kernel's peak is reset to the current RSS (``/proc/self/clear_refs``,
  Linux ≥ 4.0; ``rss_peak_reset`` false means the peaks are cumulative over the phases). ``*_base_rss_mb``
  is the RSS at the start of the phase (Python, torch, the 100k-user data, the model); serving starts
  after the training model and the data are freed. On a CUDA device, ``*_peak_gpu_mb`` is
  ``torch.cuda.max_memory_allocated`` per phase.
- Growth curve: per model, every time and memory field is fitted as ``a + b · items`` by least squares
  on relative residuals and extrapolated on paper to 10M items (rows with ``extrapolated: true``). A
  field is fitted only over the sizes that ran its phase on the path 10M takes: training rows on the
  gather path (``sampled_path``; at batch 128 the score-matrix path covers catalogs up to ≈ 20k items,
  so of 10k / 100k / 1M only 100k and 1M count), evaluation rows with ``eval_chunk`` > 0; the
  ``<phase>_fit_items`` fields list them and ``not_extrapolated`` names the fields left out. The affine
  form, not a power law, extrapolates: every field has a part that does not grow with the catalog (the
  transformer, torch itself, the user data), which flattens a log-log slope at small sizes and would
  understate 10M. ``<field>_loglog_exp`` records the log-log
  slope over the measured points (the exponent of a power-law fit; it describes the measured range only).
  Fits from catalogs below 100k items carry mostly the fixed part and timing noise: read the 10M row of
  a run that measured 100k and 1M. ``eval_peak_rss_mb`` at 10M is an upper bound: the slice buffers
  (a few 256 × 262,144 float tensors) stop growing at 262,144 items, but the 100k → 1M slope includes
  their growth.

Command (the full run; each (model, items) row is written when it finishes, reruns skip rows already
in the result file unless ``--overwrite``, so the 1M rows can run in separate calls):
    flock /tmp/rankwise-cpu.lock python benchmarks/recsys_scale.py --items 10000 100000 1000000 --users 100000
    python benchmarks/recsys_scale.py --items 2000 10000 --users 5000 --results-dir /tmp/scale  # a quick check

Results: ``benchmarks/results/recsys_scale.json`` (+ ``.png``: time and memory vs items, log-log).
Hardware: every row records it (``hardware``: the CPU model and thread count, or the GPU's name).
Seeds: data, model initialisation, negatives and user samples from ``--seed`` (0), recorded per row.

Several machines (Ray): nothing here is measured across machines. What a Ray run would change:
data-parallel training (``ray.train.torch.TorchTrainer``, one DDP worker per machine) divides the step
count per epoch by the workers, but every worker keeps a full copy of the item table and its AdamW
state and all-reduces a dense (items × d) gradient every step (the table is an ``nn.Embedding`` with
dense gradients), 200 MB per step at 1M items and 2 GB at 10M, which would then dominate the step; a
sharded table with sparse updates (row-wise model parallelism, TorchRec-style) is what removes that
term, and it is not in the library. Evaluation and all-users top-k split over users with no
communication (Ray Data ``map_batches``, one actor per machine holding the model and the faiss index),
so their time divides by the number of machines while each machine still needs the whole item table
(and flat faiss index) in memory. Serving replicas each hold the full index; at 10M items a flat
index (2 GB fp32 at d 50) still fits one machine, but its latency grows linearly with the catalog.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCHMARK = "recsys_scale"
MODELS = ("sasrec", "hstu")
ZIPF_EXPONENT = 0.8
HISTORY = (20, 100)  # history length range, both ends included
N_NEGATIVES = 128
EXTRAPOLATE_TO = 10_000_000
EVAL_BATCH = 256
MANY_BATCH = 256
PROTOCOL = (
    f"synthetic catalog: users with {HISTORY[0]}-{HISTORY[1]} items each (uniform length), items i.i.d. Zipf "
    f"p(rank r) ~ r^-{ZIPF_EXPONENT}; model defaults (d 50, 2 layers, max length 200), sampled softmax with "
    f"{N_NEGATIVES} uniform negatives, RecTrainer step (AdamW, clip 1.0, batch 128); train_step_ms = median over "
    f"steps after warm-up; eval = evaluate_full_ranking (test split, history excluded, batch {EVAL_BATCH}) on "
    "a user sample, catalog scored in slices of eval_chunk items (two passes), *_linear fields scaled linearly "
    "to all users/steps (not run); serving = "
    "Recommender.load of the saved model (PyTorch user tower + faiss IndexFlatIP, CPU), k=10; memory = peak "
    "RSS (getrusage ru_maxrss) per phase of a fresh subprocess per (model, items); extrapolated rows: "
    "affine least squares (relative residuals) over the measured sizes on the 10M code path, not measured"
)
FIT_FIELDS = ("train_step_ms", "epoch_s_linear", "train_peak_rss_mb", "eval_all_users_s_linear", "eval_peak_rss_mb",
              "serve_load_s", "p50_ms", "p99_ms", "many_ms_per_user", "serve_peak_rss_mb",
              "train_peak_gpu_mb", "eval_peak_gpu_mb")


@dataclass
class ScaleConfig:
    """One invocation: catalog sizes, users, models and how much of each phase to measure.

    Args:
        items: catalog sizes to measure.
        users: synthetic users (the epoch and all-users evaluation estimates scale to this many).
        models: recommender kinds (``sasrec``, ``hstu``).
        steps: training steps measured after ``warmup``.
        warmup: training steps run before the measured ones (the first allocates AdamW's state).
        batch_size: training windows per step.
        eval_users: users in the evaluation and ``recommend_many`` sample.
        eval_chunk: items per catalog slice in :func:`evaluate_full_ranking`, forced at every size so
            every size runs the same two-pass chunked code the library picks by itself above 256 × items >
            64M scores (with this very slice, ``DENSE_SCORES // 256``); 0 = the library's own rule (one
            dense (256 × items) matrix below that size: one pass, so about half the time per item).
        requests: single ``recommend`` calls timed.
        threads: torch threads for training and evaluation.
        serve_threads: torch and faiss threads for serving (1, as in serving_latency.py: a batch-1 request
            gains nothing from a second thread, and two OpenMP pools spinning on 2 cores cost milliseconds).
        device: torch device for training and evaluation (serving is on the CPU).
        seed: data, initialisation, negatives and samples.
        overwrite: rerun (model, items) pairs already in the result file.
        results_dir: where ``recsys_scale.json`` and the PNG go (None = ``benchmarks/results``).
    """

    items: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    users: int = 100_000
    models: tuple[str, ...] = MODELS
    steps: int = 20
    warmup: int = 3
    batch_size: int = 128
    eval_users: int = 2048
    eval_chunk: int = 262_144
    requests: int = 200
    threads: int = 2
    serve_threads: int = 1
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False
    results_dir: Path | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"ScaleConfig: unknown models {unknown}; choose from {MODELS}")
        if min(self.items, default=0) < 2 or self.users < 1:
            raise ValueError(f"ScaleConfig: items must be ≥ 2 and users ≥ 1, got {self.items}, {self.users}")
        if self.steps < 1 or self.warmup < 0 or self.eval_users < 1 or self.requests < 1:
            raise ValueError(f"ScaleConfig: steps, eval_users and requests must be ≥ 1 and warmup ≥ 0, got "
                             f"{self.steps}, {self.eval_users}, {self.requests}, {self.warmup}")
        if (self.warmup + self.steps) * self.batch_size > self.users:
            raise ValueError(f"ScaleConfig: (warmup + steps) × batch_size = {(self.warmup + self.steps) * self.batch_size} "
                             f"training users needed, only {self.users}; lower --steps or raise --users")


def synthetic_catalog(n_items: int, n_users: int, seed: int, zipf: float = ZIPF_EXPONENT,
                      lengths: tuple[int, int] = HISTORY):  # noqa: ANN201 - SequenceData (imported lazily)
    """``n_users`` histories of ``lengths`` items (uniform, ends included) drawn i.i.d. from a Zipf
    popularity ``p(rank r) ∝ r^-zipf`` over a random permutation of ``n_items`` items.

    Shapes: ``sequences``: ``n_users`` int64 views of one flat array, item indices in ``1..n_items``.
    """
    from rankwise.recsys.data import SequenceData

    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -zipf)
    cdf /= cdf[-1]
    item_of_rank = rng.permutation(n_items) + 1  # (n_items,) item index of each popularity rank
    sizes = rng.integers(lengths[0], lengths[1] + 1, n_users)  # (n_users,)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(int(sizes.sum())), side="right"), n_items - 1)
    flat = item_of_rank[ranks].astype(np.int64)  # (interactions,)
    ids = [str(i) for i in range(1, n_items + 1)]
    return SequenceData(f"synthetic-{n_items}", [f"u{u}" for u in range(n_users)],
                        np.split(flat, np.cumsum(sizes)[:-1]), ids, [""] * n_items, ids)


def _subset(data, users: np.ndarray):  # noqa: ANN001, ANN202 - SequenceData in, SequenceData out
    """The same catalog with only ``users`` (the arrays are shared, not copied)."""
    return dataclasses.replace(data, user_ids=[data.user_ids[u] for u in users], sequences=[data.sequences[u] for u in users])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _start_phase(device: str) -> tuple[float, bool]:
    """Reset the peak RSS (and CUDA peak) to the current value; returns (current RSS MB, reset worked)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    return _peak_rss_mb(), reset


def _gpu_peak(device: str, phase: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {f"{phase}_peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def _hardware(device: str) -> str:
    import torch

    from rankwise.eval.report import machine_info

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    info = machine_info()
    return f"{info['cpu']}, {info['threads']} threads"


def _train_steps(model, data, cfg: ScaleConfig) -> tuple[list[float], list[int]]:  # noqa: ANN001 - recommender, SequenceData
    """One epoch of :class:`RecTrainer` over ``data`` (``warmup + steps`` batches); returns the time of
    every ``calculate_loss`` call plus the end time, and the positions with a target in each batch."""
    from rankwise.recsys.trainer import RecTrainer, RecTrainerConfig

    stamps: list[float] = []
    positions: list[int] = []
    inner = model.calculate_loss

    def timed(batch: dict):  # noqa: ANN202 - the loss tensor
        stamps.append(time.perf_counter())
        positions.append(int((batch["target"] > 0).sum()))
        return inner(batch)

    model.calculate_loss = timed
    try:
        RecTrainer(model, data, RecTrainerConfig(epochs=1, batch_size=cfg.batch_size, lr=1e-3, windows="last",
                                                 progress=False, seed=cfg.seed)).train()
    finally:
        del model.calculate_loss
    stamps.append(time.perf_counter())
    model.zero_grad(set_to_none=True)
    return stamps, positions


def measure(model_name: str, n_items: int, cfg: ScaleConfig) -> dict:
    """Train steps, evaluation and serving of one (model, catalog size) in this process: one row."""
    import faiss
    import torch

    from rankwise.recsys import build_recommender
    from rankwise.recsys._seq import NextItemLogits
    from rankwise.recsys.evaluate import DENSE_SCORES, evaluate_full_ranking
    from rankwise.eval.report import time_calls
    from rankwise.serving.api import Recommender

    torch.set_num_threads(cfg.threads)
    faiss.omp_set_num_threads(cfg.serve_threads)
    hardware = _hardware(cfg.device)  # before serving sets its own thread count
    t0 = time.perf_counter()
    data = synthetic_catalog(n_items, cfg.users, cfg.seed)
    data_s = time.perf_counter() - t0
    interactions = sum(len(s) for s in data.sequences)
    rng = np.random.default_rng(cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    model = build_recommender(model_name, data, loss="sampled", n_negatives=N_NEGATIVES).to(cfg.device)

    # (a) training steps: time between consecutive calculate_loss calls of the library's trainer
    train_base, reset = _start_phase(cfg.device)
    stamps, positions = _train_steps(model, _subset(data, rng.choice(cfg.users, (cfg.warmup + cfg.steps) * cfg.batch_size,
                                                                   replace=False)), cfg)
    steps_ms = 1000 * np.diff(stamps)[cfg.warmup:]
    measured = positions[cfg.warmup:]
    small = [n * n_items <= NextItemLogits.FULL_MATRIX_MAX for n in measured]
    row = {
        "train_step_ms": round(float(np.median(steps_ms)), 2),
        "train_step_p90_ms": round(float(np.percentile(steps_ms, 90)), 2),
        "epoch_s_linear": round(float(np.median(steps_ms)) / 1000 * math.ceil(cfg.users / cfg.batch_size), 1),
        "positions_per_step": round(float(np.mean(measured)), 1),
        "full_softmax_logits_gb": round(float(np.mean(measured)) * n_items * 4 / 1e9, 2),
        "sampled_path": "score-matrix" if all(small) else "gather" if not any(small) else "mixed",
        "train_base_rss_mb": round(train_base, 1),
        "train_peak_rss_mb": round(_peak_rss_mb(), 1),
        **_gpu_peak(cfg.device, "train"),
    }

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model.save_pretrained(tmp)
        row["save_s"] = round(time.perf_counter() - t0, 2)

        # (b) full-ranking evaluation of a user sample
        sample = _subset(data, np.sort(rng.choice(cfg.users, min(cfg.eval_users, cfg.users), replace=False)))
        eval_base, _ = _start_phase(cfg.device)
        t0 = time.perf_counter()
        evaluate_full_ranking(model, sample, "test", batch_size=EVAL_BATCH, item_chunk=cfg.eval_chunk or None)
        eval_s = time.perf_counter() - t0
        auto_chunk = 0 if EVAL_BATCH * n_items <= DENSE_SCORES else max(1, DENSE_SCORES // EVAL_BATCH)
        row.update({
            "eval_users": len(sample.sequences),
            "eval_s": round(eval_s, 2),
            "eval_all_users_s_linear": round(eval_s * cfg.users / len(sample.sequences), 1),
            "eval_chunk": cfg.eval_chunk or auto_chunk,
            "eval_base_rss_mb": round(eval_base, 1),
            "eval_peak_rss_mb": round(_peak_rss_mb(), 1),
            **_gpu_peak(cfg.device, "eval"),
        })
        ids = data.item_ids
        histories = [[ids[i - 1] for i in h] for h in sample.history("test")]  # dataset ids, oldest first
        params = sum(p.numel() for p in model.parameters())
        del model, data, sample

        # (c) serving: Recommender over the saved directory, single requests and recommend_many
        serve_base, _ = _start_phase("cpu")
        t0 = time.perf_counter()
        rec = Recommender.load(tmp, device="cpu", threads=cfg.serve_threads)
        row["serve_load_s"] = round(time.perf_counter() - t0, 2)
        single = [histories[i % len(histories)] for i in range(cfg.requests)]
        lat = time_calls(lambda h: rec.recommend(h, k=10), single, warmup=5)
        t0 = time.perf_counter()
        for start in range(0, len(histories), MANY_BATCH):
            rec.recommend_many(histories[start:start + MANY_BATCH], k=10)
        many_s = time.perf_counter() - t0
        row.update({
            "requests": cfg.requests,
            "p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
            "p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
            "many_users_per_s": round(len(histories) / many_s, 1),
            "many_ms_per_user": round(1000 * many_s / len(histories), 4),
            "serve_base_rss_mb": round(serve_base, 1),
            "serve_peak_rss_mb": round(_peak_rss_mb(), 1),
        })
    return {
        "model": model_name, "items": n_items, "users": cfg.users, "device": cfg.device, "extrapolated": False,
        "hardware": hardware, "seed": cfg.seed, "zipf_exponent": ZIPF_EXPONENT,
        "history_len": f"{HISTORY[0]}-{HISTORY[1]}", "interactions": interactions,
        "loss": f"sampled-{N_NEGATIVES}", "batch_size": cfg.batch_size, "steps": cfg.steps, "warmup": cfg.warmup,
        "threads": cfg.threads, "serve_threads": cfg.serve_threads, "params": params, "data_s": round(data_s, 2),
        "rss_peak_reset": reset, **row,
    }


def _key(row: dict) -> tuple:
    return (row["model"], row["items"], row["users"], row.get("device", "cpu"), bool(row.get("extrapolated")))


def _sort(row: dict) -> tuple:
    return (bool(row.get("extrapolated")), row["model"], row["users"], row["items"])


def _measure_isolated(model_name: str, n_items: int, cfg: ScaleConfig) -> dict:
    """:func:`measure` in a fresh Python process, so its peak RSS is this pair's alone."""
    spec = {"model": model_name, "items": n_items,
            "config": {**dataclasses.asdict(cfg), "results_dir": None}}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise RuntimeError(f"{BENCHMARK}: the {model_name} run at {n_items} items failed (exit {proc.returncode}):\n{tail}")
    return {**json.loads(lines[-1][4:]), "wall_s": round(time.perf_counter() - t0, 1)}


def fit_affine(items: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` with ``values ≈ a + b · items``, a, b ≥ 0, least squares on relative residuals.

    Example:
        >>> [round(v, 6) for v in fit_affine(np.array([1e4, 1e5, 1e6]), np.array([3.0, 12.0, 102.0]))]
        [2.0, 0.0001]
    """
    x, y = np.asarray(items, dtype=np.float64), np.asarray(values, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1) / y[:, None]  # (n, 2), rows divided by y
    a, b = np.linalg.lstsq(design, np.ones_like(y), rcond=None)[0]
    if a < 0:
        a, b = 0.0, float(np.sum(x / y) / np.sum((x / y) ** 2))
    elif b < 0:
        a, b = float(np.sum(1 / y) / np.sum(y**-2.0)), 0.0
    return float(a), float(b)


def _phase(field: str) -> str:
    return "train" if field.startswith(("train_", "epoch_")) else "eval" if field.startswith("eval_") else "serve"


def _same_path_as_large(field: str, row: dict) -> bool:
    """Whether ``row`` ran ``field``'s phase on the code path the library takes at 10M items: the gather
    path of the sampled softmax (the score-matrix path stops at ``FULL_MATRIX_MAX`` positions × items)
    and chunked evaluation. Points of the other path would extrapolate a cost that 10M never pays."""
    if _phase(field) == "train":
        return row.get("sampled_path") == "gather"
    if _phase(field) == "eval":
        return row.get("eval_chunk", 0) > 0
    return True


def extrapolated_rows(rows: list[dict], to_items: int = EXTRAPOLATE_TO) -> list[dict]:
    """One ``extrapolated: true`` row at ``to_items`` per (model, users, device) with ≥ 2 measured sizes.

    Each field is fitted over the measured sizes that ran its phase on the 10M code path
    (:func:`_same_path_as_large`); fields with fewer than 2 such sizes are named in ``not_extrapolated``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("extrapolated"):
            groups.setdefault((r["model"], r["users"], r.get("device", "cpu")), []).append(r)
    out = []
    for (model, users, device), measured in groups.items():
        measured = sorted(measured, key=lambda r: r["items"])
        if len({r["items"] for r in measured}) < 2:
            continue
        row = {"model": model, "items": to_items, "users": users, "device": device, "extrapolated": True,
               "hardware": measured[-1]["hardware"], "seed": measured[-1]["seed"],
               "fit": "a + b*items, least squares on relative residuals; *_loglog_exp: slope of log field on log items"}
        skipped = []
        for f in FIT_FIELDS:
            pool = [r for r in measured if isinstance(r.get(f), (int, float)) and r[f] > 0 and _same_path_as_large(f, r)]
            if not any(f in r for r in measured):
                continue
            if len({r["items"] for r in pool}) < 2:
                skipped.append(f)
                continue
            x = np.array([r["items"] for r in pool], dtype=np.float64)
            y = np.array([r[f] for r in pool], dtype=np.float64)
            a, b = fit_affine(x, y)
            row[f] = round(a + b * to_items, 3)
            row[f"{f}_loglog_exp"] = round(float(np.polyfit(np.log(x), np.log(y), 1)[0]), 3)
            row[f"{_phase(f)}_fit_items"] = "/".join(str(int(v)) for v in x)
        if "many_ms_per_user" in row:
            row["many_users_per_s"] = round(1000 / row["many_ms_per_user"], 1)
        if skipped:
            row["not_extrapolated"] = (" ".join(skipped) + ": fewer than 2 measured sizes on the 10M code path "
                                       "(sampled softmax gather path, chunked evaluation)")
        out.append(row)
    return out


def run(cfg: ScaleConfig) -> list[dict]:
    """Measure each (model, items) not yet in the result file, then refit the extrapolated rows; all rows."""
    from rankwise.eval.report import RESULTS_DIR, merge_results

    out_dir = Path(cfg.results_dir) if cfg.results_dir is not None else RESULTS_DIR
    path = out_dir / f"{BENCHMARK}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    done = {_key(r) for r in rows}
    for n_items in sorted(cfg.items):
        for model_name in cfg.models:
            if not cfg.overwrite and (model_name, n_items, cfg.users, cfg.device, False) in done:
                continue
            row = _measure_isolated(model_name, n_items, cfg)
            print(json.dumps(row), flush=True)
            rows = merge_results(BENCHMARK, [row], _key, PROTOCOL, results_dir=out_dir, sort=_sort, device=cfg.device)
    extra = extrapolated_rows(rows)
    if extra:
        rows = merge_results(BENCHMARK, extra, _key, PROTOCOL, results_dir=out_dir, sort=_sort, device=cfg.device)
    return rows


def plot_scale(rows: list[dict], path: Path) -> Path:
    """Time (s) and peak RSS (MB) against items, log-log, one line per (model, field); the extrapolated
    point is joined by a dashed segment with an open marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("time (s)", {"train_step_ms": ("train step", 1e-3), "eval_all_users_s_linear": ("eval all users (linear)", 1.0),
                            "p50_ms": ("recommend p50", 1e-3)}),
              ("peak RSS (MB)", {"train_peak_rss_mb": ("train", 1.0), "eval_peak_rss_mb": ("eval", 1.0),
                                 "serve_peak_rss_mb": ("serve", 1.0)}))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = dict(zip(MODELS, "os"))
    for ax, (ylabel, fields) in zip(axes, panels):
        for (model, users, device) in sorted({(r["model"], r["users"], r.get("device", "cpu")) for r in rows}):
            group = [r for r in rows if (r["model"], r["users"], r.get("device", "cpu")) == (model, users, device)]
            for n, (field, (label, scale)) in enumerate(fields.items()):
                pts = sorted((r["items"], r[field] * scale, bool(r.get("extrapolated"))) for r in group if field in r)
                real = [(x, y) for x, y, e in pts if not e]
                if not real:
                    continue
                color = f"C{n}"
                name = f"{model} {label}" + (f" ({users} users, {device})" if len({(r['users'], r.get('device')) for r in rows}) > 1 else "")
                ax.plot(*zip(*real), marker=markers.get(model, "^"), color=color, label=name,
                        linestyle="-" if model == MODELS[0] else ":")
                for x, y, e in pts:
                    if e:
                        ax.plot([real[-1][0], x], [real[-1][1], y], color=color, linestyle="--", alpha=0.6)
                        ax.plot([x], [y], marker=markers.get(model, "^"), color=color, fillstyle="none")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items (open markers: extrapolated, not measured)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{BENCHMARK}: sampled softmax ({N_NEGATIVES}), CPU serving; eval time scaled linearly to all users")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="catalog sizes")
    parser.add_argument("--users", type=int, default=100_000, help="synthetic users")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="recommender kinds")
    parser.add_argument("--steps", type=int, default=20, help="training steps measured (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before the measured ones")
    parser.add_argument("--batch-size", type=int, default=128, help="training windows per step")
    parser.add_argument("--eval-users", type=int, default=2048, help="users in the evaluation and recommend_many sample")
    parser.add_argument("--eval-chunk", type=int, default=262_144,
                        help="items per slice of the chunked evaluation, forced at every size (0 = the library's own rule)")
    parser.add_argument("--requests", type=int, default=200, help="single recommend calls timed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and evaluation")
    parser.add_argument("--serve-threads", type=int, default=1, help="torch and faiss threads for serving")
    parser.add_argument("--device", default="cpu", help="torch device for training and evaluation (serving stays on the CPU)")
    parser.add_argument("--seed", type=int, default=0, help="data, initialisation, negatives and samples")
    parser.add_argument("--overwrite", action="store_true", help="rerun (model, items) rows already in the result file")
    parser.add_argument("--results-dir", type=Path, default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one measure() call, in a subprocess
    args = parser.parse_args()
    if args.worker is not None:
        spec = json.loads(args.worker)
        config = ScaleConfig(**{**spec["config"], "items": tuple(spec["config"]["items"]),
                                "models": tuple(spec["config"]["models"])})
        print("ROW " + json.dumps(measure(spec["model"], spec["items"], config)), flush=True)
        return
    from rankwise.eval.report import RESULTS_DIR, print_table

    cfg = ScaleConfig(items=tuple(args.items), users=args.users, models=tuple(args.models), steps=args.steps,
                      warmup=args.warmup, batch_size=args.batch_size, eval_users=args.eval_users, eval_chunk=args.eval_chunk,
                      requests=args.requests, threads=args.threads, serve_threads=args.serve_threads, device=args.device,
                      seed=args.seed, overwrite=args.overwrite, results_dir=args.results_dir)
    rows = run(cfg)
    shown = ("model", "items", "users", "extrapolated", "train_step_ms", "epoch_s_linear", "train_peak_rss_mb", "eval_s",
             "eval_all_users_s_linear", "eval_peak_rss_mb", "p50_ms", "p99_ms", "many_users_per_s", "serve_peak_rss_mb")
    print_table([{k: r.get(k) for k in shown} for r in rows], f"{BENCHMARK} — {PROTOCOL}")
    out_dir = args.results_dir if args.results_dir is not None else RESULTS_DIR
    plot_scale(rows, out_dir / f"{BENCHMARK}.png")


if __name__ == "__main__":
    main()
