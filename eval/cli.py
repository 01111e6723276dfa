"""`rankwise eval beir|bright`: first stage → reranker → fusion → metrics, run file and metrics.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.eval.pipeline import BI_ENCODER, DEFAULT_METRICS, RetrieverKind
from rankwise.rankers.first_stage.dense import IndexKind
from rankwise.rankers.fusion import FusionMethod

app = typer.Typer(help="Evaluate retrieval and reranking on BEIR and BRIGHT.", no_args_is_help=True)

_RERANKER_HELP = (
    f"'{BI_ENCODER}' (the bundled all-MiniLM-L6-v2 cosine, default), 'none' (first stage only), "
    "or a trained model directory / hub id."
)


RetrieverOpt = Annotated[RetrieverKind, typer.Option(help="First stage: pyserini BM25 or bi-encoder + faiss.")]
RerankerOpt = Annotated[str, typer.Option(help=_RERANKER_HELP)]
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
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(1)


@contextmanager
def _one_line_errors(reranker: str) -> Iterator[None]:
    """Bad data or model input → one line on stderr and exit code 1, never a traceback."""
    from rankwise.core.io import DatasetError
    from rankwise.core.model_dir import ModelDirError

    try:
        yield
    except (DatasetError, ModelDirError) as err:
        _fail(str(err))
    except OSError as err:  # transformers' "not found locally / on the hub"
        _fail(_load_error(reranker, err))


def _run(name: str, corpus_text, queries, qrels, excluded, retriever, reranker, top_k, fusion, fusion_weight,
         dense_index, output_dir: Path, as_json: bool, log_generations: Optional[Path] = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rankwise.eval.pipeline import PipelineConfig, run_pipeline
    from rankwise.eval.report import print_table
    from rankwise.eval.runs import write_trec_run

    if fusion_weight is not None and not 0.0 <= fusion_weight <= 1.0:
        _fail(f"--fusion-weight must be in [0, 1], got {fusion_weight}")
    if log_generations is not None:
        from rankwise.core.model_dir import RANKWISE_JSON, read_rankwise_json

        if not (Path(reranker) / RANKWISE_JSON).is_file() or read_rankwise_json(reranker)["kind"] != "listwise":
            _fail(f"--log-generations needs a listwise LLM ranker directory as --reranker, got {reranker!r}")
    config = PipelineConfig(
        retriever=retriever, top_k=top_k, reranker=None if reranker == "none" else reranker,
        fusion=fusion, fusion_weight=fusion_weight, metrics=DEFAULT_METRICS, dense_index=dense_index,
        reranker_options={"log_generations": log_generations} if log_generations is not None else {},
    )
    total = len(queries) * top_k
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=as_json or not sys.stderr.isatty(), console=None) as bar:
        task = bar.add_task(f"rerank ({reranker})", total=total)
        result = run_pipeline(corpus_text, queries, qrels, config, excluded=excluded,
                              progress=lambda n: bar.advance(task, n))
    output_dir.mkdir(parents=True, exist_ok=True)
    write_trec_run(result.final, output_dir / "run.trec", tag=f"rankwise-{retriever.value}")
    record = {
        "dataset": name, "retriever": retriever.value, "reranker": config.reranker or "none",
        "top_k": top_k, "fusion": fusion.value if config.reranker else "none",
        "fusion_weight": result.fusion_weight, "queries": len(queries),
        **result.metrics,
        **{f"first_stage_{k}": v for k, v in result.first_stage_metrics.items()},
        **{k: round(v, 3) for k, v in result.timings.items()},
    }
    tmp = output_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, output_dir / "metrics.json")
    if as_json:
        typer.echo(json.dumps(record))
        return
    rows = [{"stage": retriever.value, **result.first_stage_metrics}]
    if config.reranker:
        rows.append({"stage": f"+ {config.reranker} ({record['fusion']}, w={result.fusion_weight})", **result.metrics})
    print_table(rows, f"{name}: {len(queries)} queries, top-{top_k}; wrote {output_dir}/run.trec, metrics.json")


@app.command("beir")
def eval_beir(
    dataset: str = typer.Option("scifact", help="BEIR dataset name (looked up under --data-dir) or a folder in BEIR's layout."),
    split: str = typer.Option("test", help="qrels split to evaluate (qrels/<split>.tsv)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder holding beir/<name>/ (default: $RANKWISE_DATA)."),
    retriever: RetrieverOpt = RetrieverKind.bm25,
    reranker: RerankerOpt = BI_ENCODER,
    top_k: TopKOpt = 100,
    fusion: FusionOpt = FusionMethod.zscore,
    fusion_weight: FusionWeightOpt = None,
    dense_index: DenseIndexOpt = IndexKind.flat,
    output_dir: Path = typer.Option(Path("runs/beir"), help="Where run.trec and metrics.json are written."),
    as_json: JsonOpt = False,
    log_generations: LogGenerationsOpt = None,
) -> None:
    """BEIR: first stage, rerank, fuse, and score (nDCG@10, R@10, R@100, MRR@10, MAP@100).

    Examples:

        rankwise eval beir --dataset scifact --retriever bm25 --reranker none

        rankwise eval beir --dataset scifact                      # BM25 + bi-encoder fusion

        rankwise eval beir --dataset scifact --reranker runs/ce-lipo --top-k 100

        rankwise eval beir --dataset path/to/beir/nfcorpus --retriever dense --dense-index hnsw

        rankwise eval beir --dataset scifact --reranker models/listwise --top-k 20 --log-generations gen.jsonl
    """
    from rankwise.eval.datasets.beir import load_beir

    with _one_line_errors(reranker):
        ds = load_beir(dataset, split, data_dir)
        corpus_text = {d: ds.doc_text(d) for d in ds.corpus}
        _run(f"beir/{ds.name}/{split}", corpus_text, ds.queries, ds.qrels, None, retriever, reranker, top_k,
             fusion, fusion_weight, dense_index, output_dir, as_json, log_generations)


@app.command("bright")
def eval_bright(
    domain: str = typer.Option("biology", help="BRIGHT domain (biology, earth_science, economics, ...)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data folder holding bright/<domain>/ (default: $RANKWISE_DATA)."),
    documents: Optional[Path] = typer.Option(None, help="Documents file (jsonl/parquet with id, content); default: beside the examples, else the HF hub."),
    long: bool = typer.Option(False, "--long", help="Long-document setting (gold_ids_long)."),
    retriever: RetrieverOpt = RetrieverKind.bm25,
    reranker: RerankerOpt = BI_ENCODER,
    top_k: TopKOpt = 100,
    fusion: FusionOpt = FusionMethod.zscore,
    fusion_weight: FusionWeightOpt = None,
    dense_index: DenseIndexOpt = IndexKind.flat,
    output_dir: Path = typer.Option(Path("runs/bright"), help="Where run.trec and metrics.json are written."),
    as_json: JsonOpt = False,
    log_generations: LogGenerationsOpt = None,
) -> None:
    """BRIGHT: like `eval beir`; each query's excluded ids are removed before scoring, as BRIGHT does.

    Examples:

        rankwise eval bright --domain biology --reranker none

        rankwise eval bright --domain economics --documents economics_docs.parquet
    """
    from rankwise.eval.datasets.bright import load_bright

    with _one_line_errors(reranker):
        ds = load_bright(domain, data_dir, documents, long)
        _run(f"bright/{domain}{'-long' if long else ''}", ds.corpus, ds.queries, ds.qrels, ds.excluded, retriever,
             reranker, top_k, fusion, fusion_weight, dense_index, output_dir, as_json, log_generations)
