"""`rankwise recommend train|eval|predict`: sequential recommenders."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import DeviceOpt, OverwriteOpt

app = typer.Typer(help="Train, evaluate and query sequential recommenders.", no_args_is_help=True)


class ModelKind(str, Enum):
    sasrec = "sasrec"
    rearec = "rearec"
    rearec_hstu = "rearec-hstu"
    hllm = "hllm"
    hcn = "hcn"
    hstu = "hstu"


class Objective(str, Enum):
    erl = "erl"
    prl = "prl"


class ItemMode(str, Enum):
    frozen = "frozen"
    finetune = "finetune"


class Adapter(str, Enum):
    linear = "linear"
    mlp = "mlp"


class Split(str, Enum):
    valid = "valid"
    test = "test"


class Protocol(str, Enum):
    ours = "ours"
    hstu = "hstu"


PROTOCOL_HELP = ("Split and catalog: ours (leave-one-out with a validation item, items with interactions, whole history "
                 "excluded) or hstu (the HSTU authors': train on all but the last item, no validation, every catalogue "
                 "item ranked, only the last --max-len history items excluded).")


TRUST_HELP = ("Let transformers run Python code shipped in the model directory or LLM folders (HLLM). Off by default; "
              "a model directory cannot turn it on itself. Only for directories you trust.")

def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


def _incomplete(model_dir: Path, err: FileNotFoundError) -> str:
    """One line for a model directory with a file missing (safetensors and others raise without a filename)."""
    what = f"{Path(err.filename).name} missing" if err.filename else (str(err).strip().splitlines() or ["a file is missing"])[0]
    return f"{model_dir}: incomplete model directory ({what})"


DROP_SHORT_HELP = "Drop users with fewer than 3 interactions (leave-one-out needs 3) instead of refusing the dataset."


def _load_sequences(dataset: str, item_ids: list[str] | None = None, drop_short_users: bool = False,  # noqa: ANN202 - SequenceData
                    protocol: str = "ours"):
    from rankwise.eval.datasets.interactions import InteractionDataError, load_interactions
    from rankwise.recsys.data import SequenceData

    try:
        return SequenceData.from_interactions(load_interactions(dataset, drop_short_users), item_ids=item_ids, protocol=protocol)
    except (InteractionDataError, ValueError) as err:
        _fail(str(err))


def _user_history(dataset: str, user: str) -> tuple[list[str], dict[str, str], str]:
    """``user``'s item ids (oldest first), the catalog's item titles and the dataset name.

    Only this user's history matters: other users' history lengths are not checked (a user with one
    interaction can be served; leave-one-out is for training and evaluation).
    """
    import polars as pl

    from rankwise.eval.datasets.interactions import InteractionDataError, load_interactions

    try:
        data = load_interactions(dataset, min_interactions=1)
    except (InteractionDataError, ValueError) as err:
        _fail(str(err))
    rows = data.interactions.filter(pl.col("user_id") == user)
    if not rows.height:
        _fail(f"{data.source}: user {user!r} is not in dataset {data.name} (field user_id)")
    return rows["item_id"].to_list(), data.item_titles(), data.name


def _load_model(model_dir: Path, trust_remote_code: bool = False):  # noqa: ANN202 - a SequentialRecommender
    from rankwise.core.model_dir import ModelDirError
    from rankwise.recsys import load_recommender

    try:
        return load_recommender(model_dir, trust_remote_code=trust_remote_code)
    except ModelDirError as err:
        _fail(str(err))
    except FileNotFoundError as err:
        _fail(_incomplete(model_dir, err))


def _print_metrics(metrics: dict, title: str, protocol: str = "ours") -> None:
    from rankwise.eval.report import print_table
    from rankwise.recsys.evaluate import KS, protocol_text

    row = {k: metrics[k] for k in ("users", *[f"{m}@{k}" for k in KS for m in ("hr", "ndcg")]) if k in metrics}
    print_table([row], f"{title} — {protocol_text(protocol)}")


@app.command("train")
def train(
    model: ModelKind = typer.Option(ModelKind.sasrec, help="Model family to train."),
    dataset: str = typer.Option("ml-100k", help="'ml-100k' (embedded, from the recbole wheel), a name under <data>/recsys (ml-1m, amazon2018_scientific, yelp_s3rec) or a dataset folder."),
    output: Path = typer.Option(..., help="Directory to write the trained model to (safetensors + rankwise.json)."),
    epochs: int = typer.Option(10, min=1, help="Training epochs."),
    batch_size: int = typer.Option(128, min=1, help="Training windows per step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    adam_beta2: float = typer.Option(0.999, "--adam-beta2", min=0.0, max=0.9999, help="AdamW beta2 (the HSTU authors: 0.98)."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", min=0.0, help="Gradient-norm clip, 0 = off (the HSTU authors: off)."),
    max_len: int = typer.Option(50, min=2, help="Longest input sequence (older items are cut)."),
    hidden: int = typer.Option(64, min=4, help="Model width d."),
    layers: int = typer.Option(2, min=0, help="Transformer blocks (HSTU: HSTU layers; HCN: blocks under the interest extractor)."),
    heads: int = typer.Option(1, min=1, help="Attention heads (must divide --hidden)."),
    dropout: float = typer.Option(0.2, help="Dropout rate."),
    objective: Objective = typer.Option(Objective.erl, help="ReaRec objective: erl (ensemble) or prl (progressive)."),
    reasoning_steps: int = typer.Option(2, min=0, help="ReaRec latent reasoning steps K (0 = SASRec)."),
    item_mode: ItemMode = typer.Option(ItemMode.frozen, help="HLLM: frozen item LLM with cached vectors (CPU) or finetune both towers."),
    item_llm: Optional[str] = typer.Option(None, help="HLLM item LLM: HF directory or hub id (default: the bundled all-MiniLM-L6-v2)."),
    user_llm: Optional[str] = typer.Option(None, help="HLLM user LLM: an HF decoder directory or hub id (default: a small causal transformer of --hidden/--layers/--heads)."),
    negatives: int = typer.Option(512, min=0, help="HLLM InfoNCE negatives (0 = the whole catalog; frozen item LLM only)."),
    adapter: Adapter = typer.Option(Adapter.linear, help="HLLM item adapter: linear, or a two-layer MLP."),
    item_id_vectors: bool = typer.Option(False, "--item-id-vectors", help="HLLM: add a learned per-item id vector to each adapted text vector (ours)."),
    loss: str = typer.Option("ce", "--loss", help="SASRec, HSTU, ReaRec, HCN: ce (full softmax over the catalog) or sampled (the target against --sampled-negatives random items: large catalogs)."),
    sampled_negatives: int = typer.Option(128, "--sampled-negatives", min=1, help="Negatives per position for --loss sampled."),
    device: DeviceOpt = "auto",
    eval_every: int = typer.Option(0, min=0, help="Validate every N epochs and keep the best weights (0 = keep the last)."),
    protocol: Protocol = typer.Option(Protocol.ours, "--protocol", help=PROTOCOL_HELP),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after the epoch that passes this wall-clock budget."),
    seed: int = typer.Option(42, help="Random seed."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    drop_short_users: bool = typer.Option(False, "--drop-short-users", help=DROP_SHORT_HELP),
    overwrite: OverwriteOpt = False,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line (train log + test metrics) instead of tables."),
) -> None:
    """Train a sequential recommender on a leave-one-out split and evaluate it on the test items.

    Examples:
        rankwise recommend train --model sasrec --dataset ml-100k --output runs/sasrec-ml100k --epochs 5
        rankwise recommend train --model rearec --objective prl --dataset ml-1m --max-len 200 --output runs/rearec
        rankwise recommend train --model hllm --dataset amazon2018_scientific --output runs/hllm-sci
        rankwise recommend train --model hllm --negatives 0 --adapter mlp --dataset amazon2018_scientific --output runs/hllm-sci
        rankwise recommend train --model hllm --user-llm HuggingFaceTB/SmolLM2-135M --dataset ml-100k --output runs/hllm-smol
        rankwise recommend train --model hcn --dataset /path/to/folder --output runs/hcn --json
        rankwise recommend train --model hstu --dataset ml-1m --hidden 50 --max-len 200 --loss sampled --adam-beta2 0.98 --grad-clip 0 --output runs/hstu
        rankwise recommend train --model hstu --dataset ml-1m --protocol hstu --epochs 101 --max-len 200 --loss sampled --output runs/hstu-p
        rankwise recommend train --model sasrec --dataset /path/to/folder --drop-short-users --output runs/sasrec --overwrite
    """
    import torch

    from rankwise.core.outputs import OutputError, atomic_dir, check_output
    from rankwise.recsys import build_recommender
    from rankwise.recsys.evaluate import evaluate_full_ranking
    from rankwise.recsys.trainer import RecTrainer, RecTrainerConfig

    from rankwise.core.progress import quiet_library_progress

    quiet_library_progress(as_json)
    if hidden % heads:
        _fail(f"--hidden {hidden} is not divisible by --heads {heads}")
    try:
        check_output(output, overwrite, "dir")
    except OutputError as err:
        _fail(f"--output {err}")
    if protocol is Protocol.hstu and eval_every:
        _fail("--eval-every: --protocol hstu holds out no validation split; train a fixed number of --epochs")
    data = _load_sequences(dataset, drop_short_users=drop_short_users, protocol=protocol.value)
    torch.manual_seed(seed)
    common = {"hidden": hidden, "n_layers": layers, "n_heads": heads, "dropout": dropout, "max_len": max_len}
    if loss not in ("ce", "sampled"):
        _fail(f"--loss {loss}: ce or sampled")
    if loss == "sampled" and model is ModelKind.hllm:
        _fail("--loss sampled: HLLM samples its own InfoNCE negatives (--negatives)")
    from rankwise.core.device import resolve_device

    where = resolve_device(device)  # checked while parsing (DeviceOpt)
    sampling = {"loss": loss, "n_negatives": sampled_negatives}
    options = {  # the flags each family reads
        ModelKind.sasrec: sampling,
        ModelKind.rearec: {"objective": objective.value, "reasoning_steps": reasoning_steps, **sampling},
        ModelKind.rearec_hstu: {"objective": objective.value, "reasoning_steps": reasoning_steps, **sampling},
        ModelKind.hcn: sampling,
        ModelKind.hstu: sampling,
        ModelKind.hllm: {"item_mode": item_mode.value, "item_llm": item_llm, "user_llm": user_llm, "n_negatives": negatives,
                         "adapter": adapter.value, "item_id_vectors": item_id_vectors, "trust_remote_code": trust_remote_code},
    }[model]
    try:
        net = build_recommender(model.value, data, **common, **options)
    except (OSError, ValueError) as err:
        _fail(f"cannot build {model.value}: {str(err).splitlines()[0]}")
    net.to(where)
    cfg = RecTrainerConfig(epochs=epochs, batch_size=batch_size, lr=lr, adam_beta2=adam_beta2, grad_clip=grad_clip, seed=seed, eval_every=eval_every,
                           max_minutes=max_minutes, progress=not as_json and sys.stderr.isatty())
    log = RecTrainer(net, data, cfg).train()
    metrics = evaluate_full_ranking(net, data, "test")
    net.to("cpu")
    with atomic_dir(output) as staging:
        net.save_pretrained(staging, dataset=dataset, train_log={"epochs": log.epochs, "train_s": round(log.train_s, 1),
                                                                 "losses": log.losses, "best_epoch": log.best_epoch},
                            test=metrics, protocol=protocol.value)
    if as_json:
        typer.echo(json.dumps({"model": net.kind, "dataset": data.name, "protocol": protocol.value, "output": str(output),
                               "epochs": log.epochs, "train_s": round(log.train_s, 1), **metrics}))
        return
    _print_metrics(metrics, f"{net.kind} on {data.name}: {log.epochs} epochs, {log.train_s:.0f} s; saved {output}", protocol.value)


@app.command("eval")
def evaluate(
    model_dir: Path = typer.Option(..., help="A directory written by `rankwise recommend train`."),
    dataset: Optional[str] = typer.Option(None, help="Dataset to evaluate on (default: the one the model was trained on)."),
    split: Split = typer.Option(Split.test, help="Leave-one-out split: test (last item) or valid (second-last)."),
    protocol: Optional[Protocol] = typer.Option(None, "--protocol", help=PROTOCOL_HELP + " Default: the one the model was trained under."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    drop_short_users: bool = typer.Option(False, "--drop-short-users", help=DROP_SHORT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line instead of a table."),
) -> None:
    """Full-ranking evaluation (all items scored, history excluded): HR/NDCG/Recall @10/50/200.

    Examples:
        rankwise recommend eval --model-dir runs/sasrec-ml100k
        rankwise recommend eval --model-dir runs/hllm-sci --split valid --json
    """
    from rankwise.core.progress import quiet_library_progress
    from rankwise.recsys.evaluate import evaluate_full_ranking

    quiet_library_progress(as_json)
    net = _load_model(model_dir, trust_remote_code)
    name = dataset or net.meta.get("dataset")
    if not name:
        _fail(f"{model_dir}/rankwise.json: field 'dataset' is missing; pass --dataset")
    chosen = protocol.value if protocol else net.meta.get("protocol", "ours")
    data = _load_sequences(name, item_ids=net.item_ids, drop_short_users=drop_short_users, protocol=chosen)
    try:
        metrics = evaluate_full_ranking(net, data, split.value)
    except ValueError as err:
        _fail(f"--split {split.value}: {err}")
    if as_json:
        typer.echo(json.dumps({"model_dir": str(model_dir), "dataset": data.name, "split": split.value, "protocol": chosen, **metrics}))
        return
    _print_metrics(metrics, f"{net.kind} on {data.name} ({split.value})", chosen)


def _predict_all_users(model_dir: Path, k: int, dataset: str | None, output: Path | None, batch_users: int, resume: bool,
                       overwrite: bool, trust_remote_code: bool, as_json: bool) -> None:
    from rankwise.core.io import DatasetError
    from rankwise.core.model_dir import ModelDirError
    from rankwise.core.outputs import OutputError
    from rankwise.eval.datasets.interactions import InteractionDataError
    from rankwise.recsys.batch_predict import AllUsersConfig, export_all_users

    if output is None:
        _fail("--all-users needs --output FILE.parquet")
    try:
        config = AllUsersConfig(output, k=k, batch_users=batch_users, resume=resume, overwrite=overwrite)
        result = export_all_users(model_dir, config, dataset, trust_remote_code=trust_remote_code)
    except (ValueError, OutputError, DatasetError, ModelDirError, InteractionDataError, OSError) as err:
        if isinstance(err, FileNotFoundError) and err.filename:
            _fail(_incomplete(model_dir, err))
        _fail(str(err))
    summary = {"output": str(result.output), "users": result.users, "skipped_users": result.skipped_users, "k": k,
               "chunks": result.chunks, "chunks_reused": result.chunks_reused, "seconds": round(result.seconds, 2)}
    typer.echo(json.dumps(summary) if as_json else
               f"wrote {result.output}: top-{k} for {result.users} users ({result.skipped_users} skipped: no known item), "
               f"{result.users_per_s:.0f} users/s, {result.chunks_reused} of {result.chunks} chunks reused")


@app.command("predict")
def predict(
    model_dir: Path = typer.Option(..., help="A directory written by `rankwise recommend train`."),
    user: Optional[str] = typer.Option(None, help="User id as in the dataset (or --all-users)."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="How many items to recommend."),
    dataset: Optional[str] = typer.Option(None, help="Dataset holding the user's history (default: the training one)."),
    all_users: bool = typer.Option(False, "--all-users", help="Every user of the dataset, written to --output (.parquet: user_id, rank, item_id, score)."),
    output: Optional[Path] = typer.Option(None, "--output", help="--all-users: the .parquet file to write (chunks in OUTPUT.parts/, resumable)."),
    batch_users: int = typer.Option(512, "--batch-users", min=1, help="--all-users: users per user-tower call."),
    resume: bool = typer.Option(False, "--resume", help="--all-users: continue a killed job from OUTPUT.parts/manifest.json."),
    overwrite: OverwriteOpt = False,
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Recommend the top-k unseen items for a user from their whole history (titles shown), or for
    every user of the dataset into one parquet file (--all-users --output).

    Only that user's history is read: other users' history lengths do not matter, and items the
    model does not know are skipped with a warning (refused only when none is known).

    Examples:
        rankwise recommend predict --model-dir runs/sasrec-ml100k --user 196 -k 10
        rankwise recommend predict --model-dir runs/hllm-sci --user 0 -k 5 --json
        rankwise recommend predict --model-dir runs/sasrec-onnx --all-users --output top10.parquet -k 10
        rankwise recommend predict --model-dir runs/sasrec-onnx --all-users --output top10.parquet -k 10 --resume
    """
    from rich.console import Console
    from rich.table import Table

    from rankwise.core.model_dir import ModelDirError
    from rankwise.core.progress import quiet_library_progress
    from rankwise.serving.api import Recommender

    quiet_library_progress(as_json)
    if all_users:
        _predict_all_users(model_dir, k, dataset, output, batch_users, resume, overwrite, trust_remote_code, as_json)
        return
    if user is None:
        _fail("pass --user USER, or --all-users --output FILE.parquet")
    try:
        rec = Recommender.load(model_dir, device="cpu", trust_remote_code=trust_remote_code)
    except ModelDirError as err:
        _fail(str(err))
    except FileNotFoundError as err:
        _fail(_incomplete(model_dir, err))
    meta_file = model_dir / ("serving.json" if rec.backend == "onnx" else "rankwise.json")
    name = dataset or json.loads(meta_file.read_text()).get("dataset")
    if not name:
        _fail(f"{meta_file}: field 'dataset' is missing; pass --dataset")
    history, title, data_name = _user_history(name, user)
    known = set(rec.item_ids)
    if not any(item in known for item in history):
        _fail(f"user {user!r}: none of the {len(history)} items of their history in {data_name} is known to "
              f"the model {model_dir} (e.g. {history[-1]!r}); nothing to recommend from")
    hits = rec.recommend(history, k)
    recs = [{"rank": h.rank, "item_id": h.item_id, "title": title.get(h.item_id, h.item_id), "score": h.score} for h in hits]
    if as_json:
        typer.echo(json.dumps({"user": user, "history_len": len(history), "items": recs}))
        return
    table = Table(title=f"top-{k} for user {user} ({len(history)} past items; last: {title.get(history[-1], history[-1])})")
    for col in ("rank", "item_id", "title", "score"):
        table.add_column(col)
    for r in recs:
        table.add_row(str(r["rank"]), r["item_id"], r["title"], f"{r['score']:.4f}")
    Console().print(table)
