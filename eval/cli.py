"""`rankwise eval beir|bright`: first stage → reranker → fusion → metrics, run file and metrics.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import DeviceOpt, OverwriteOpt
from rankwise.eval.pipeline import BI_ENCODER, DEFAULT_METRICS, RetrieverKind
from rankwise.rankers.first_stage.dense import IndexKind
from rankwise.rankers.fusion import FusionMethod

app = typer.Typer(help="Evaluate retrieval and reranking on BEIR and BRIGHT.", no_args_is_help=True)

_RERANKER_HELP = (
    f"'{BI_ENCODER}' (the bundled all-MiniLM-L6-v2 cosine, default), 'none' (first stage only), "
    "or a trained model directory / hub id."
)


RetrieverOpt = Annotated[RetrieverKind, typer.Option(help="First stage: pyserini BM25 or bi-encoder + faiss.")]
RerankerOpt = Annotated[Optional[list[str]], typer.Option(help=_RERANKER_HELP + " Repeat to fuse several rerankers.")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="PyTorch rerankers' weights: fp32, bf16 or fp16 (default: as saved).")]
FusionWeightsOpt = Annotated[
    Optional[str], typer.Option(help="Several --reranker: comma-separated weights, first stage first (choose them on train queries).")
]
TopKOpt = Annotated[int, typer.Option(min=1, help="First-stage candidates per query, all reranked.")]
FusionOpt = Annotated[FusionMethod, typer.Option(help="Fuse reranker and first-stage scores per query.")]
FusionWeightOpt = Annotated[
    Optional[float], typer.Option(help="First-stage weight in the fusion (default: the model's own, chosen on train).")
]
DenseIndexOpt = Annotated[IndexKind, typer.Option(help="faiss index for --retriever dense.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON line instead of a table.")]
LogGenerationsOpt = Annotated[
    Optional[Path],
    typer.Option("--log-generations", help="Listwise LLM rerankers: append each window's prompt ids, raw answer, "
                 "parsed order and parse flags to this JSONL file."),
]


def _load_error(reranker: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"cannot load reranker {reranker!r}: not a rankwise model directory, and as a hub id: {first}"


def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


@contextmanager
def _one_line_errors(reranker: str) -> Iterator[None]:
    """Bad data or model input → one line on stderr and exit code 1, never a traceback."""
    from rankwise.core.io import DatasetError
    from rankwise.core.model_dir import ModelDirError
    from rankwise.core.outputs import OutputError

    try:
        yield
    except (DatasetError, ModelDirError, OutputError) as err:
        _fail(str(err))
    except OSError as err:  # a file the OS refused names itself; else transformers' "not found locally / on the hub"
        _fail(str(err) if err.filename or not reranker else _load_error(reranker, err))


def _run(name: str, corpus_text, queries, qrels, excluded, config, output_dir: Path, as_json: bool,
         fit: tuple[dict, dict] | None = None) -> None:
    """Build nothing, decide nothing: run the library's pipeline (fitting the fusion weights of
    several rerankers on ``fit`` = (train queries, train qrels) first) and print."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rankwise.core.progress import quiet_library_progress
    from rankwise.eval.pipeline import evaluate_to_dir, fit_pipeline_fusion
    from rankwise.eval.report import print_table

    quiet_library_progress(as_json)
    extra = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=as_json or not sys.stderr.isatty(), console=None) as bar:
        if fit is not None:
            task = bar.add_task("fit fusion on train", total=len(fit[0]) * config.top_k * len(config.rerankers))
            weights, fit_value = fit_pipeline_fusion(corpus_text, fit[0], fit[1], config, progress=lambda n: bar.advance(task, n))
            config = replace(config, fusion_weights=weights)
            extra = {"fit_queries": len(fit[0]), "fit_ndcg@10": fit_value}
        task = bar.add_task(f"rerank ({'+'.join(config.rerankers) or 'none'})", total=len(queries) * config.top_k * len(config.rerankers))
        try:
            record, result = evaluate_to_dir(name, corpus_text, queries, qrels, config, output_dir, excluded,
                                             progress=lambda n: bar.advance(task, n), extra=extra)
        except ValueError as err:
            _fail(str(err).splitlines()[0])
    if as_json:
        typer.echo(json.dumps(record))
        return
    rows = [{"stage": config.retriever.value, **result.first_stage_metrics}]
    if config.rerankers:
        weights = record.get("fusion_weights", record["fusion_weight"])
        rows.append({"stage": f"+ {record['reranker']} ({record['fusion']}, w={weights})", **result.metrics})
    print_table(rows, f"{name}: {len(queries)} queries, top-{config.top_k}; wrote {output_dir}/run.trec, metrics.json")


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --output-dir that is a file or already holds run.trec / metrics.json."""
    from rankwise.core.outputs import OutputError, check_output
    from rankwise.eval.pipeline import OUTPUT_FILES

    try:
        check_output(output_dir, overwrite, "dir", contents=OUTPUT_FILES)
    except OutputError as err:
        _fail(f"--output-dir {err}")


def _config(reranker: list[str] | None, retriever, top_k, fusion, fusion_weight, fusion_weights, dense_index,
            log_generations, device: str = "auto", dtype: str | None = None):  # noqa: ANN001, ANN202 - typer values -> PipelineConfig
    from rankwise.eval.pipeline import PipelineConfig
    from rankwise.core.device import resolve_dtype

    try:
        if dtype is not None:
            resolve_dtype(dtype)
    except ValueError as err:
        _fail(f"--dtype: {err}")

    names = [r for r in (reranker or [BI_ENCODER]) if r != "none"]
    if fusion_weight is not None and not 0.0 <= fusion_weight <= 1.0:
        _fail(f"--fusion-weight must be in [0, 1], got {fusion_weight}")
    weights = None
    if fusion_weights:
        try:
            weights = tuple(float(w) for w in fusion_weights.split(","))
        except ValueError:
            _fail(f"--fusion-weights {fusion_weights!r}: comma-separated numbers, first stage first")
        if len(weights) != len(names) + 1 or min(weights) < 0:
            _fail(f"--fusion-weights: {len(names) + 1} non-negative weights (first stage, then each --reranker), got {fusion_weights!r}")
    if log_generations is not None:
        from rankwise.core.model_dir import RANKWISE_JSON, read_rankwise_json

        if not names or not (Path(names[0]) / RANKWISE_JSON).is_file() or read_rankwise_json(names[0])["kind"] != "listwise":
            _fail(f"--log-generations needs a listwise LLM ranker directory as the first --reranker, got {names[:1]}")
    return PipelineConfig(
        retriever=retriever, top_k=top_k, reranker=names[0] if names else None, fusion=fusion, fusion_weight=fusion_weight,
        metrics=DEFAULT_METRICS, dense_index=dense_index, extra_rerankers=tuple(names[1:]), fusion_weights=weights,
        reranker_options={"log_generations": log_generations} if log_generations is not None else {},
        device=device, dtype=dtype,
    )


@app.command("beir")
def eval_beir(
    dataset: str = typer.Option("scifact", help="BEIR dataset name (looked up under --data-dir) or a folder in BEIR's layout."),
    split: str = typer.Option("test", help="qrels split to evaluate (qrels/<split>.tsv)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder holding beir/<name>/ (default: $RANKWISE_DATA)."),
    retriever: RetrieverOpt = RetrieverKind.bm25,
    reranker: RerankerOpt = None,
    top_k: TopKOpt = 100,
    fusion: FusionOpt = FusionMethod.zscore,
    fusion_weight: FusionWeightOpt = None,
    fusion_weights: FusionWeightsOpt = None,
    fit_queries: int = typer.Option(0, "--fit-queries", min=0, help="Several --reranker: fit the fusion weights on this many train queries (qrels/train.tsv) first."),
    dense_index: DenseIndexOpt = IndexKind.flat,
    output_dir: Path = typer.Option(Path("runs/beir"), help="Where run.trec and metrics.json are written."),
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    log_generations: LogGenerationsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """BEIR: first stage, rerank, fuse, and score (nDCG@10, R@10, R@100, MRR@10, MAP@100).

    Examples:

        rankwise eval beir --dataset scifact --retriever bm25 --reranker none

        rankwise eval beir --dataset scifact                      # BM25 + bi-encoder fusion

        rankwise eval beir --dataset scifact --reranker runs/ce-lipo --top-k 100

        rankwise eval beir --dataset path/to/beir/nfcorpus --retriever dense --dense-index hnsw

        rankwise eval beir --dataset scifact --reranker models/listwise --top-k 20 --log-generations gen.jsonl

        rankwise eval beir --dataset scifact --reranker bi-encoder --reranker runs/ce-lambdaloss --fit-queries 160

        rankwise eval beir --dataset scifact --reranker none --output-dir runs/bm25 --overwrite
    """
    from rankwise.eval.datasets.beir import load_beir

    _check_output_dir(output_dir, overwrite)
    config = _config(reranker, retriever, top_k, fusion, fusion_weight, fusion_weights, dense_index, log_generations, device, dtype)
    if len(config.rerankers) > 1 and not (fusion_weights or fit_queries):
        _fail("several --reranker: give --fusion-weights or --fit-queries N (weights fit on train queries)")
    with _one_line_errors(",".join(config.rerankers)):
        ds = load_beir(dataset, split, data_dir)
        corpus_text = {d: ds.doc_text(d) for d in ds.corpus}
        fit = None
        if fit_queries and len(config.rerankers) > 1 and not fusion_weights:
            train = load_beir(dataset, "train", data_dir)
            qids = sorted(q for q in train.qrels if q in train.queries)[:fit_queries]
            fit = ({q: train.queries[q] for q in qids}, {q: train.qrels[q] for q in qids})
        _run(f"beir/{ds.name}/{split}", corpus_text, ds.queries, ds.qrels, None, config, output_dir, as_json, fit)


@app.command("bright")
def eval_bright(
    domain: str = typer.Option("biology", help="BRIGHT domain (biology, earth_science, economics, ...)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder holding bright/<domain>/ (default: $RANKWISE_DATA)."),
    documents: Optional[Path] = typer.Option(None, help="Documents file (jsonl/parquet with id, content); default: beside the examples, else the HF hub."),
    long: bool = typer.Option(False, "--long", help="Long-document setting (gold_ids_long)."),
    retriever: RetrieverOpt = RetrieverKind.bm25,
    reranker: RerankerOpt = None,
    top_k: TopKOpt = 100,
    fusion: FusionOpt = FusionMethod.zscore,
    fusion_weight: FusionWeightOpt = None,
    fusion_weights: FusionWeightsOpt = None,
    dense_index: DenseIndexOpt = IndexKind.flat,
    output_dir: Path = typer.Option(Path("runs/bright"), help="Where run.trec and metrics.json are written."),
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    log_generations: LogGenerationsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
) -> None:
    """BRIGHT: like `eval beir`; each query's excluded ids are removed before scoring, as BRIGHT does.

    Examples:

        rankwise eval bright --domain biology --reranker none

        rankwise eval bright --domain economics --documents economics_docs.parquet
    """
    from rankwise.eval.datasets.bright import load_bright

    _check_output_dir(output_dir, overwrite)
    config = _config(reranker, retriever, top_k, fusion, fusion_weight, fusion_weights, dense_index, log_generations, device, dtype)
    if len(config.rerankers) > 1 and not fusion_weights:
        _fail("several --reranker on BRIGHT (no train split): give --fusion-weights")
    with _one_line_errors(",".join(config.rerankers)):
        ds = load_bright(domain, data_dir, documents, long)
        _run(f"bright/{domain}{'-long' if long else ''}", ds.corpus, ds.queries, ds.qrels, ds.excluded, config,
             output_dir, as_json)
