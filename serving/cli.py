"""`rankwise export` and `rankwise rerank`: ONNX export and offline batch reranking."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import DeviceOpt, OverwriteOpt
from rankwise.serving.runtime import RUNTIMES

app = typer.Typer()


class Quantize(str, Enum):
    """Quantisation schemes of ``rankwise export``."""

    none = "none"
    int8 = "int8"
    int8_smooth = "int8-smooth"
    int8_static = "int8-static"
    int8_blockwise = "int8-blockwise"


class Part(str, Enum):
    """What ``rankwise export`` exports from a model directory."""

    model = "model"
    item_tower = "item-tower"


class Engine(str, Enum):
    """Execution engines of ``rankwise rerank``."""

    local = "local"
    ray = "ray"


def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


def _os_error(err: OSError) -> str:
    """One line for an error the OS (or a library reading files) raised: a full disk, a missing weight file."""
    if err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return err.strerror if err.errno and err.strerror else (str(err).splitlines() or [type(err).__name__])[0]


@app.command("export")
def export(
    model_dir: Path = typer.Option(..., "--model-dir", help="A rankwise model directory (rankwise.json names its kind)."),
    output: Path = typer.Option(..., "--output", help="Export directory: model.onnx, tokenizer / item vectors, serving.json."),
    quantize: Quantize = typer.Option(Quantize.none, "--quantize", help="int8: onnxruntime dynamic quantisation (QInt8 weights, per-tensor activations; fastest on CPU). int8-smooth: the same after SmoothQuant scaling chosen on --calibration pairs (same speed, less score error). int8-blockwise: MatMulNBits, 8-bit weights and activations per block of 128 (closer to fp32, slower). int8-static: QDQ with per-channel weights and activation ranges calibrated on --calibration pairs."),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 weights with float32 inputs/outputs (for CUDA serving)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="int8-smooth / --fp32-ops: .jsonl or .parquet of (query, doc) pairs like the served traffic (>= 32; a few hundred)."),
    fp32_ops: int = typer.Option(0, "--fp32-ops", min=0, help="int8 / int8-smooth: keep this many weight MatMuls in fp32, those whose quantisation moves the --calibration scores most (mixed precision)."),
    exact_head: int = typer.Option(0, "--exact-head", min=0, help="With --quantize / --fp16: also ship the fp32 graph and rescore each query's top K documents with it (a cascade: the quantised graph scores all, fp32 orders the head)."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Max allowed fp32 |ONNX - PyTorch| on the parity inputs."),
    fuse: bool = typer.Option(True, "--fuse/--no-fuse", help="Fuse a BERT-family encoder's attention/LayerNorm/GELU into onnxruntime ops (inputs right-padded)."),
    part: Part = typer.Option(Part.model, "--part", help="model: the scorer / user tower; item-tower: HLLM item text -> vector."),
    runtime: str = typer.Option("auto", "--runtime", help="auto: openvino for an fp32 reranker export where OpenVINO is installed (the serving benchmark's fastest engine within 0.005 nDCG@10 of fp32), else onnxruntime. openvino: also write an OpenVINO IR (rerankers; --quantize int8 then means NNCF post-training int8 on --calibration pairs) that Reranker.load serves with OpenVINO on the CPU. onnxruntime: model.onnx only."),
    openvino_precision: str = typer.Option("bf16", "--openvino-precision", help="--runtime openvino: bf16 (OpenVINO's CPU default where bf16 is native) or f32."),
    share_prefix: bool = typer.Option(True, "--share-prefix/--no-share-prefix", help="ERank: run the prompt prefix a query's documents share once per batch and reuse its keys/values (exact); --no-share-prefix exports whole prompts."),
    int8_weights: str = typer.Option("auto", "--int8-weights", help="--quantize int8 / int8-smooth (and OpenVINO int8): 8bit, 7bit, or auto: 7bit on an x86-64 CPU without VNNI, whose int8 kernels saturate with full-range weights (export on the machine kind that serves, or say which)."),
    overwrite: OverwriteOpt = False,
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON line."),
) -> None:
    """Export a trained model to ONNX (dynamic batch and sequence axes) and check it against PyTorch.

    Exportable kinds: cross-encoder (logit), erank (expected 0-10 score computed in the graph),
    bi-encoder (scale * cosine), the recommenders' user towers (item vectors are cached beside the
    graph) and, with --part item-tower, HLLM's item tower. The export fails,
    writing nothing, when the fp32 graph differs from PyTorch by more than --tolerance. An existing
    --output is refused unless --overwrite; the export is built beside it and renamed into place.

    Examples:
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-onnx
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-int8 --quantize int8
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-sq --quantize int8-smooth --calibration pairs.jsonl
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-mp --quantize int8-smooth --calibration pairs.jsonl --fp32-ops 4
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-head --quantize int8-smooth --calibration pairs.jsonl --exact-head 4
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-ov --runtime openvino
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-ov8 --runtime openvino --quantize int8 --calibration pairs.jsonl
        rankwise export --model-dir runs/sasrec-ml1m --output runs/sasrec-onnx --json
        rankwise export --model-dir runs/hllm-ml1m --output runs/hllm-items-onnx --part item-tower
        rankwise export --model-dir runs/ce-minilm --output runs/ce-minilm-onnx --overwrite
    """
    import json

    from rankwise.core.model_dir import ModelDirError
    from rankwise.core.outputs import OutputError, atomic_dir, check_output
    from rankwise.core.progress import quiet_library_progress
    from rankwise.serving.export import ExportParityError, export_model, read_pairs_file

    quiet_library_progress(json_out)
    if output.resolve() == model_dir.resolve():
        _fail(f"--output {output} is --model-dir: export to another directory")
    try:
        check_output(output, overwrite, "dir")
    except OutputError as err:
        _fail(f"--output {err}")
    if quantize is not Quantize.none and fp16:
        _fail(f"--quantize {quantize.value} and --fp16 exclude each other")
    if int8_weights not in ("auto", "8bit", "7bit"):
        _fail(f"--int8-weights {int8_weights}: auto, 8bit or 7bit")
    if runtime not in RUNTIMES or openvino_precision not in ("bf16", "f32"):
        _fail(f"--runtime {runtime} / --openvino-precision {openvino_precision}: {'|'.join(RUNTIMES)} and bf16|f32")
    needs_pairs = quantize in (Quantize.int8_smooth, Quantize.int8_static) or fp32_ops > 0
    # OpenVINO int8 calibrates a reranker's activations on --calibration pairs (export_model says when they are
    # missing); the ERank prompt scorer's int8 is weight-only and data-free
    takes_pairs = needs_pairs or (runtime == "openvino" and quantize is Quantize.int8)
    if fp32_ops and quantize not in (Quantize.int8, Quantize.int8_smooth):
        _fail("--fp32-ops needs --quantize int8 or int8-smooth")
    if exact_head and quantize is Quantize.none and not fp16:
        _fail("--exact-head needs --quantize or --fp16 (the head is rescored by the fp32 graph)")
    if (needs_pairs and calibration is None) or (calibration is not None and not takes_pairs):
        _fail(f"{'--quantize ' + quantize.value if quantize in (Quantize.int8_smooth, Quantize.int8_static) else '--fp32-ops' if fp32_ops else '--runtime openvino --quantize int8'} "
              "needs --calibration FILE" if calibration is None
              else "--calibration is used by --quantize int8-smooth, --fp32-ops and --runtime openvino --quantize int8 only")
    try:
        with atomic_dir(output) as staging:
            result = export_model(
                model_dir, staging, quantize=None if quantize is Quantize.none else quantize.value, fp16=fp16,
                tolerance=tolerance, part=part.value, fuse=fuse, fp32_ops=fp32_ops, exact_head=exact_head,
                calibration_pairs=read_pairs_file(calibration) if calibration is not None else None,
                runtime=runtime, openvino_precision=openvino_precision, share_prefix=share_prefix,
                int8_reduce_range={"auto": None, "8bit": False, "7bit": True}[int8_weights],
            )
    except (ModelDirError, ExportParityError, ValueError) as err:
        _fail(str(err))
    except OSError as err:  # transformers' "no file named model.safetensors", a full disk: one line, not a traceback
        _fail(f"{model_dir}: {_os_error(err)}" if err.filename is None and not err.errno else _os_error(err))
    if json_out:
        typer.echo(json.dumps({"output": str(output), "kind": result.kind, "precision": result.precision,
                               "runtime": result.runtime, "parity_max_abs_diff": result.parity_max_abs_diff, "export_s": round(result.export_s, 2),
                               "exact_head": exact_head}))
    else:
        head = f" + fp32 head of {exact_head}" if exact_head else ""
        typer.echo(f"exported {result.kind} ({result.precision}{head}, served by {result.runtime}) to {output} in "
                   f"{result.export_s:.1f}s; max |served - PyTorch| = {result.parity_max_abs_diff:.2e}")


@app.command("rerank")
def rerank(
    model: Path = typer.Option(..., "--model", help="A reranker directory: PyTorch (rankwise.json) or ONNX export (serving.json)."),
    candidates: Path = typer.Option(..., "--candidates", help="First-stage candidates: TREC run, .parquet or .jsonl (qid, docid, score[, rank])."),
    corpus: Path = typer.Option(..., "--corpus", help="Documents: .jsonl[.gz] (_id/docid, title, text) or .parquet (docid, title, text)."),
    queries: Path = typer.Option(..., "--queries", help="Queries: .jsonl[.gz] (_id/qid, text) or .tsv (qid<TAB>text)."),
    output: Path = typer.Option(..., "--output", help="Output run: .parquet, else a TREC run file. Work goes to OUTPUT.parts/."),
    top_k: int = typer.Option(100, "--top-k", min=1, help="Rerank each query's first TOP_K candidates."),
    chunk_queries: int = typer.Option(32, "--chunk-queries", min=1, help="Queries per chunk (unit of atomic writes and of resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed job from OUTPUT.parts/manifest.json."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an earlier job's parts and output (refused otherwise)."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local: this process; ray: Ray Data actor pool."),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray actors, one model session each (--engine ray)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this existing Ray cluster (e.g. ray://head:10001). Default: start a private local cluster bound to 127.0.0.1, without dashboard."),
    device: DeviceOpt = "auto",
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads per model session."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Pairs per forward pass."),
    runtime: str = typer.Option("auto", "--runtime", help="An export's runtime: auto (the one it was exported for; onnxruntime on CUDA), onnxruntime or openvino."),
    tag: str = typer.Option("rankwise", "--tag", help="Run tag written in the TREC output."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON line instead of a progress bar."),
) -> None:
    """Rerank a first-stage run offline, in resumable chunks, with any rankwise reranker.

    Each chunk of queries is written atomically with a manifest of hashes, so a job killed at any
    point continues with --resume and ends with the same output, byte for byte, as an uninterrupted run.

    Examples:
        rankwise rerank --model runs/ce-onnx --candidates bm25.trec --corpus scifact/corpus.jsonl.gz --queries scifact/queries.jsonl.gz --output ce.trec
        rankwise rerank --model runs/ce-onnx --candidates bm25.trec --corpus scifact/corpus.jsonl.gz --queries scifact/queries.jsonl.gz --output ce.trec --resume
        rankwise rerank --model runs/ce-onnx --candidates bm25.parquet --corpus corpus.parquet --queries queries.tsv --output ce.parquet --engine ray --workers 4
    """
    import functools
    import json

    from rankwise.core.io import DatasetError
    from rankwise.core.model_dir import ModelDirError, fingerprint_model_dir, read_rankwise_json
    from rankwise.serving.api import Reranker
    from rankwise.serving.export import read_serving_json
    from rankwise.serving.batch import BatchRerankConfig, run_batch_rerank
    from rankwise.core.progress import quiet_library_progress

    quiet_library_progress(json_out)
    if runtime not in RUNTIMES:
        _fail(f"--runtime {runtime}: {'|'.join(RUNTIMES)}")
    if engine is Engine.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            _fail("--engine ray needs Ray: pip install 'ray[data]'")
    try:
        onnx = (model / "serving.json").is_file()
        if onnx:  # a bad directory fails here, not inside a worker
            read_serving_json(model)
        else:
            read_rankwise_json(model)
        config = BatchRerankConfig(
            candidates, queries, corpus, output, top_k=top_k, chunk_queries=chunk_queries, engine=engine.value,
            workers=workers, ray_address=ray_address, resume=resume, overwrite=overwrite, tag=tag,
        )
        # weights and runtime included: resume cannot mix models or engines
        model_id = f"{model.resolve()}#{fingerprint_model_dir(model)}" + (f"#{runtime}" if runtime != "auto" else "")
        factory = functools.partial(Reranker.load, model, device=device, threads=threads, batch_size=batch_size,
                                    runtime=runtime)
        result = run_batch_rerank(config, factory, model_id, progress=not json_out and sys.stderr.isatty())
    except (ModelDirError, DatasetError, FileExistsError, ValueError) as err:
        _fail(str(err))
    except OSError as err:  # a full disk (the job continues with --resume), a weight file missing: one line
        _fail(_os_error(err))
    summary = {"output": str(result.output), "queries": result.queries, "docs": result.docs, "chunks": result.chunks,
               "chunks_reused": result.chunks_reused, "seconds": round(result.seconds, 2), "docs_per_s": round(result.docs_per_s, 1)}
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"reranked {result.queries} queries ({result.docs} docs, {result.chunks_reused}/{result.chunks} chunks "
                   f"reused) in {result.seconds:.1f}s = {result.docs_per_s:.1f} docs/s -> {result.output}")
