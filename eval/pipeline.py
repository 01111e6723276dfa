"""The evaluation pipeline: first stage → (reranker) → (fusion with the first stage) → metrics.

One function, :func:`run_pipeline`, shared by ``rankwise eval beir|bright`` and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import polars as pl

from rankwise.eval.metrics import evaluate
from rankwise.rankers.base import Ranker, rank_by_score
from rankwise.rankers.first_stage.dense import IndexKind
from rankwise.rankers.fusion import FusionMethod, fuse, fuse_many

__all__ = [
    "RetrieverKind", "PipelineConfig", "PipelineResult", "run_pipeline", "first_stage",
    "load_reranker", "fit_pipeline_fusion", "evaluate_to_dir", "OUTPUT_FILES", "DEFAULT_METRICS", "DEFAULT_BI_ENCODER_FUSION_WEIGHT",
]

#: What :func:`evaluate_to_dir` writes into its output directory (``rankwise eval --output-dir``).
OUTPUT_FILES = ("run.trec", "metrics.json")

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")

#: Weight of BM25 in the z-score fusion with the bundled bi-encoder's cosine, chosen on SciFact
#: *train* by ``benchmarks/scifact_first_stage.py`` (grid 0.00–1.00 step 0.05).
DEFAULT_BI_ENCODER_FUSION_WEIGHT = 0.3

BI_ENCODER = "bi-encoder"


class RetrieverKind(str, Enum):
    bm25 = "bm25"
    dense = "dense"


@dataclass(frozen=True)
class PipelineConfig:
    """What to run.

    Args:
        retriever: first stage, ``bm25`` (pyserini) or ``dense`` (bi-encoder + faiss).
        top_k: candidates kept from the first stage and reranked.
        reranker: ``None`` (first stage only), ``"bi-encoder"`` (the bundled MiniLM cosine) or a
            trained model directory / hub id loadable by :func:`rankers.load_ranker`.
        fusion: how the reranker's scores are fused with the first stage's (``none`` keeps the reranker's).
        fusion_weight: weight of the first stage; ``None`` = the model's own ``fusion_weight``
            (rankwise.json), or the default chosen on train for the bi-encoder, else 0.
        dense_index: faiss index for the dense first stage.
        reranker_options: keyword arguments for a rankwise model directory's constructor (e.g.
            ``{"log_generations": "gen.jsonl"}`` for a listwise LLM ranker).
        extra_rerankers: more rerankers (names or directories, as ``reranker``), each scoring the
            same candidates; all are fused with the first stage by :func:`rankwise.rankers.fusion.fuse_many`.
        fusion_weights: one weight per run (first stage, ``reranker``, then ``extra_rerankers``), needed
            with ``extra_rerankers``; choose them on train queries with :func:`fit_pipeline_fusion`.
        device: where PyTorch and ONNX rerankers run: ``auto`` (CUDA when available), ``cuda``, ``cpu``.
        dtype: PyTorch rerankers' weights: ``fp32`` / ``bf16`` / ``fp16`` (``None``: as saved).
    """

    retriever: RetrieverKind = RetrieverKind.bm25
    top_k: int = 100
    reranker: str | None = BI_ENCODER
    fusion: FusionMethod = FusionMethod.zscore
    fusion_weight: float | None = None
    metrics: tuple[str, ...] = DEFAULT_METRICS
    dense_index: IndexKind = IndexKind.flat
    reranker_options: Mapping[str, Any] = field(default_factory=dict)
    extra_rerankers: tuple[str, ...] = ()
    fusion_weights: tuple[float, ...] | None = None
    device: str = "auto"
    dtype: str | None = None

    @property
    def rerankers(self) -> tuple[str, ...]:
        return ((self.reranker,) if self.reranker else ()) + tuple(self.extra_rerankers)


@dataclass
class PipelineResult:
    first_stage: pl.DataFrame
    final: pl.DataFrame
    metrics: dict[str, float]
    first_stage_metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    fusion_weight: float | None = None
    fusion_weights: tuple[float, ...] | None = None


def load_reranker(name: str, device: str = "cpu", dtype: str | None = None, **options: Any) -> tuple[Ranker, float | None]:
    """A reranker by name or directory on ``device`` (``auto`` / ``cuda`` / ``cpu``) with PyTorch
    weights in ``dtype``, and the fusion weight it carries (if any).

    ``options`` go to a rankwise model directory's ``from_pretrained`` (its constructor settings).
    """
    from rankwise.core.device import resolve_device

    if name == BI_ENCODER:
        from rankwise.rankers.bi_encoder import BiEncoder, BiEncoderRanker

        return BiEncoderRanker(BiEncoder(device=str(resolve_device(device)))), DEFAULT_BI_ENCODER_FUSION_WEIGHT
    from rankwise.core.model_dir import RANKWISE_JSON, read_rankwise_json
    from rankwise.rankers import load_ranker

    if (Path(name) / "serving.json").is_file():  # an ONNX export: the serving loader
        if options:
            raise ValueError(f"{name}: an ONNX export takes no reranker options ({sorted(options)})")
        from rankwise.serving.api import Reranker
        from rankwise.serving.export import read_serving_json

        return Reranker.load(name, device=device), read_serving_json(name).get("fusion_weight")
    placement = {"device": device, **({"dtype": dtype} if dtype else {})}
    if (Path(name) / RANKWISE_JSON).is_file():
        return load_ranker(name, **placement, **options), read_rankwise_json(name).get("fusion_weight")
    if Path(name).exists():
        return load_ranker(name), None  # raises a ModelDirError naming the missing rankwise.json
    # a hub id: any HF sequence-classification model with one logit, used as a cross-encoder
    from rankwise.rankers.cross_encoder import CrossEncoder

    return CrossEncoder.from_pretrained(name, **placement), None


def first_stage(
    kind: RetrieverKind, corpus_text: Mapping[str, str], queries: Mapping[str, str], k: int,
    dense_index: IndexKind = IndexKind.flat,
) -> pl.DataFrame:
    """Run BM25 or dense retrieval for every query; returns a candidate set."""
    if RetrieverKind(kind) is RetrieverKind.bm25:
        from rankwise.rankers.first_stage.bm25 import BM25Retriever

        return BM25Retriever.from_corpus(corpus_text).batch_search(queries, k)
    from rankwise.rankers.first_stage.dense import DenseRetriever

    return DenseRetriever.from_corpus(corpus_text, index=dense_index, progress=True).batch_search(queries, k)


def _drop_excluded(candidates: pl.DataFrame, excluded: Mapping[str, set[str]] | None) -> pl.DataFrame:
    if not excluded:
        return candidates
    pairs = [(q, d) for q, ds in excluded.items() for d in ds]
    if not pairs:
        return candidates
    drop = pl.DataFrame(pairs, schema={"qid": pl.String, "docid": pl.String}, orient="row")
    return candidates.join(drop, on=["qid", "docid"], how="anti")


def _first_and_reranked(
    corpus_text: Mapping[str, str],
    queries: Mapping[str, str],
    config: PipelineConfig,
    excluded: Mapping[str, set[str]] | None,
    rankers: list[Ranker],
    timings: dict[str, float],
    progress: Callable[[int], None] | None,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    t0 = time.perf_counter()
    # fetch a few extra so that removing excluded ids still leaves top_k candidates
    extra = max((len(v) for v in (excluded or {}).values()), default=0)
    first = first_stage(config.retriever, corpus_text, queries, config.top_k + extra, config.dense_index)
    first = rank_by_score(_drop_excluded(first, excluded)).filter(pl.col("rank") <= config.top_k)
    timings["first_stage_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reranked = [r.rerank_candidates(first, queries, corpus_text, top_k=config.top_k, progress=progress) for r in rankers]
    if rankers:
        timings["rerank_s"] = time.perf_counter() - t0
        timings["docs_per_s"] = sum(x.height for x in reranked) / max(timings["rerank_s"], 1e-9)
    return first, reranked


def fit_pipeline_fusion(
    corpus_text: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    config: PipelineConfig,
    step: float = 0.05,
    progress: Callable[[int], None] | None = None,
) -> tuple[tuple[float, ...], float]:
    """Fusion weights of the first stage and every reranker of ``config``, fit on held-out queries
    (pass *train* queries and qrels, never the reported split); returns (weights, fit nDCG@10)."""
    from rankwise.eval.fusion_fit import fit_fusion_weights

    if not config.rerankers:
        raise ValueError("fit_pipeline_fusion: the config has no reranker to fuse")
    rankers = [load_reranker(name, config.device, config.dtype, **(config.reranker_options if i == 0 else {}))[0]
               for i, name in enumerate(config.rerankers)]
    first, reranked = _first_and_reranked(corpus_text, queries, config, None, rankers, {}, progress)
    return fit_fusion_weights([first, *reranked], qrels, step=step, method=config.fusion)


def run_pipeline(
    corpus_text: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    config: PipelineConfig = PipelineConfig(),
    excluded: Mapping[str, set[str]] | None = None,
    reranker: Ranker | None = None,
    progress: Callable[[int], None] | None = None,
) -> PipelineResult:
    """First stage, optional rerank and fusion, metrics on ``qrels``.

    Args:
        corpus_text: ``docid -> text`` handed to the first stage and the reranker.
        queries: ``qid -> text`` to run.
        qrels: judgements for the metrics.
        config: see :class:`PipelineConfig`.
        excluded: ``qid -> docids`` removed from every run before scoring (BRIGHT).
        reranker: an already built reranker (overrides ``config.reranker``).
        progress: called with the number of documents reranked after each query.
    """
    timings: dict[str, float] = {}
    weight = config.fusion_weight
    rankers: list[Ranker] = []
    if reranker is not None:
        rankers.append(reranker)
    elif config.reranker:  # load first: a bad model fails before the first stage runs
        loaded, carried = load_reranker(config.reranker, config.device, config.dtype, **config.reranker_options)
        rankers.append(loaded)
        weight = weight if weight is not None else carried
    rankers += [load_reranker(name, config.device, config.dtype)[0] for name in config.extra_rerankers]
    if config.extra_rerankers and (config.fusion is FusionMethod.none or config.fusion_weights is None
                                   or len(config.fusion_weights) != len(rankers) + 1):
        raise ValueError(f"several rerankers need --fusion zscore|rrf and {len(rankers) + 1} fusion weights "
                         "(first stage first), e.g. fitted on train queries with fit_pipeline_fusion")
    first, reranked = _first_and_reranked(corpus_text, queries, config, excluded, rankers, timings, progress)
    first_metrics = evaluate(qrels, first, config.metrics)
    if not rankers:
        return PipelineResult(first, first, first_metrics, first_metrics, timings)
    if config.extra_rerankers:
        weights = tuple(float(w) for w in config.fusion_weights)  # type: ignore[union-attr]
        final = fuse_many([first, *reranked], weights, config.fusion)
        return PipelineResult(first, final, evaluate(qrels, final, config.metrics), first_metrics, timings,
                              weights[0], weights)
    weight = 0.0 if weight is None else float(weight)
    reranked = reranked[0]
    final = fuse(first, reranked, weight, config.fusion) if config.fusion is not FusionMethod.none else reranked
    return PipelineResult(first, final, evaluate(qrels, final, config.metrics), first_metrics, timings,
                          weight if config.fusion is not FusionMethod.none else None)


def evaluate_to_dir(
    name: str,
    corpus_text: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    config: PipelineConfig,
    output_dir: Path,
    excluded: Mapping[str, set[str]] | None = None,
    progress: Callable[[int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], PipelineResult]:
    """:func:`run_pipeline`, then ``output_dir/run.trec`` and ``output_dir/metrics.json`` (each written
    atomically, the metrics last); returns the metrics record (``extra`` fields added) and the result.

    Existing files are replaced: refusing them is the caller's choice (``rankwise eval`` checks
    ``--output-dir`` with :func:`rankwise.core.outputs.check_output` before any work)."""
    import json

    from rankwise.core.outputs import write_atomic
    from rankwise.eval.runs import write_trec_run

    result = run_pipeline(corpus_text, queries, qrels, config, excluded=excluded, progress=progress)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_trec_run(result.final, output_dir / "run.trec", tag=f"rankwise-{RetrieverKind(config.retriever).value}")
    fused = bool(config.rerankers) and config.fusion is not FusionMethod.none
    record = {
        "dataset": name, "retriever": RetrieverKind(config.retriever).value, "reranker": "+".join(config.rerankers) or "none",
        "top_k": config.top_k, "fusion": FusionMethod(config.fusion).value if config.rerankers else "none",
        "fusion_weight": result.fusion_weight, **({"fusion_weights": list(result.fusion_weights)} if result.fusion_weights else {}),
        "queries": len(queries), **(extra or {}),
        **result.metrics,
        **{f"first_stage_{k}": v for k, v in result.first_stage_metrics.items()},
        **{k: round(v, 3) for k, v in result.timings.items()},
    }
    if not fused:
        record["fusion_weight"] = None
    write_atomic(output_dir / "metrics.json", json.dumps(record, indent=1) + "\n")
    return record, result
