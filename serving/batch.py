"""Offline batch reranking: stream candidates in chunks, write each chunk atomically, resume exactly.

A job reads a candidate set (TREC run, parquet or jsonl) lazily with polars, cuts its queries
into chunks of ``chunk_queries`` (in order of first appearance), reranks each chunk with any
:class:`~rankers.base.Ranker`, and writes ``<output>.parts/chunk-NNNNN.parquet`` (temporary file +
rename) followed by ``manifest.json`` (also renamed into place) recording the chunk's sha256.
A killed job resumed with ``resume=True`` keeps every chunk whose file matches its recorded
hash, redoes the others (missing, partial or corrupted files, or a chunk written but not yet
recorded), and assembles the same final file, byte for byte, as an uninterrupted run.

A job holds ``<output>.lock`` (an exclusive ``flock``) from its start to its end, so a second job on
the same output, started at the same time or while the first runs (``resume`` included), is refused
with one line naming the lock instead of writing the same chunks at once. A write that fails (a full
disk) is one ``OSError`` line naming the file; what was written before it is kept, no temporary file
is left, and the job continues with ``resume``.

The ``"ray"`` engine sends the pending queries through Ray Data ``map_batches`` with an actor pool
(each actor builds its ranker once) and writes chunks as their queries come back; chunk files,
manifest and the final output are identical to the local engine's. Unless an existing cluster is
named (``ray_address``), the job starts a private local Ray cluster listening on loopback only.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from rankwise.core.io import DatasetError, id_field, iter_lines, read_jsonl, text_field
from rankwise.core.chunks import chunk_done as _chunk_ok
from rankwise.core.chunks import MANIFEST, ChunkedOutput, job_lock, open_manifest, write_parquet_atomic, writing as _writing
from rankwise.core.chunks import sha256_file as _sha256
from rankwise.core.outputs import write_atomic
from rankwise.eval.candidate_check import check_candidates
from rankwise.rankers.base import Ranker

__all__ = ["BatchRerankConfig", "BatchResult", "run_batch_rerank", "scan_candidates", "ray_init_kwargs"]

log = logging.getLogger("rankwise.serving")

RESULT_SCHEMA = {"qid": pl.String, "docid": pl.String, "score": pl.Float64, "rank": pl.Int64}


@dataclass(frozen=True)
class BatchRerankConfig(ChunkedOutput):
    """One batch reranking job.

    Args:
        candidates: first-stage candidates: TREC run (``qid Q0 docid rank score tag``), ``.parquet``
            or ``.jsonl`` with ``qid``, ``docid`` and ``score`` (``rank`` optional). Checked first by
            :func:`~rankwise.eval.candidate_check.check_candidates`: a malformed line, a null/NaN score
            or a duplicate ``(qid, docid)`` is an error naming the file and line, never guessed around.
        queries: ``.jsonl[.gz]`` with ``_id``/``qid`` and ``text``/``query``, or ``.tsv`` ``qid<TAB>text``;
            a query to rerank whose text is empty or not a string is an error naming the file and line.
        corpus: ``.jsonl[.gz]`` with ``_id``/``docid``, ``text`` and optional ``title``, or ``.parquet``
            with ``docid``, ``text`` (and optional ``title``); document text = ``title + " " + text``.
        output: ``.parquet`` (candidate-set columns) or any other name for a TREC run.
        top_k: rerank only each query's first ``top_k`` first-stage candidates (``None``: all).
        chunk_queries: queries per chunk: the unit of atomic writes and of work lost on a kill.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data actor pool).
        workers: Ray actors (one ranker each).
        ray_address: an existing Ray cluster to join (``None``: start a private local one bound to
            127.0.0.1, without dashboard; see :func:`ray_init_kwargs`).
        resume: continue a job from its manifest; without one, an existing ``output`` is refused
            (:class:`~rankwise.core.outputs.OutputError`) rather than replaced.
        overwrite: discard an earlier job's parts and output (without it, an existing output is refused).
        tag: run tag of the TREC output.
    """

    candidates: Path
    queries: Path
    corpus: Path
    output: Path
    top_k: int | None = 100
    chunk_queries: int = 32
    engine: Literal["local", "ray"] = "local"
    workers: int = 2
    ray_address: str | None = None
    resume: bool = False
    overwrite: bool = False
    tag: str = "rankwise"

    def __post_init__(self) -> None:
        if self.chunk_queries < 1:
            raise ValueError(f"BatchRerankConfig: chunk_queries must be >= 1, got {self.chunk_queries}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"BatchRerankConfig: top_k must be >= 1 or None, got {self.top_k}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"BatchRerankConfig: engine must be 'local' or 'ray', got {self.engine!r}")
        if self.resume and self.overwrite:
            raise ValueError("BatchRerankConfig: choose one of resume and overwrite")


@dataclass(frozen=True)
class BatchResult:
    """What a job did: output path, counts, chunks reused from an earlier run, throughput."""

    output: Path
    queries: int
    docs: int
    chunks: int
    chunks_reused: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0


# -- inputs ---------------------------------------------------------------------------------------
def scan_candidates(path: str | Path) -> pl.LazyFrame:
    """A lazy candidate set ``qid, docid, score, rank`` from a TREC run, parquet or jsonl file.

    Missing ranks are derived from descending score within each query.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if path.suffix == ".parquet":
        lf = pl.scan_parquet(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        lf = pl.scan_ndjson(path)
    else:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lineno, first = next(((n, line) for n, line in enumerate(fh, start=1) if line.strip()), (1, ""))
        sep = "\t" if "\t" in first else " "
        if len(first.split()) != 6:
            raise DatasetError(f"{path}:{lineno}: expected a TREC run line 'qid Q0 docid rank score tag', got {first.strip()[:80]!r}")
        lf = pl.scan_csv(
            path, separator=sep, has_header=False, new_columns=["qid", "q0", "docid", "rank", "score", "tag"],
            schema_overrides={"qid": pl.String, "q0": pl.String, "docid": pl.String, "rank": pl.Int64,
                              "score": pl.Float64, "tag": pl.String}, quote_char=None,
        ).filter(pl.col("qid").is_not_null())  # blank lines, skipped as the check and the TREC reader skip them
    names = lf.collect_schema().names()
    missing = [c for c in ("qid", "docid", "score") if c not in names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    lf = lf.with_columns(pl.col("qid").cast(pl.String), pl.col("docid").cast(pl.String), pl.col("score").cast(pl.Float64))
    if "rank" not in names:
        lf = lf.with_columns(pl.col("score").rank("ordinal", descending=True).over("qid").cast(pl.Int64).alias("rank"))
    return lf.select("qid", "docid", pl.col("score"), pl.col("rank").cast(pl.Int64))


def _read_queries(path: Path) -> dict[str, tuple[str, int]]:
    """``qid -> (text, line number)``; a ``null`` or non-string text is an error naming file and line."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    out = {}
    if path.name.endswith((".tsv", ".tsv.gz", ".txt")):
        for lineno, line in iter_lines(path):
            if line.strip():
                parts = line.rstrip("\n").split("\t", 1)
                if len(parts) != 2:
                    raise DatasetError(f"{path}:{lineno}: expected 'qid<TAB>text'")
                out[parts[0]] = (parts[1], lineno)
        return out
    for lineno, rec in read_jsonl(path, ()):
        field = "text" if "text" in rec else "query"
        if not ("_id" in rec or "qid" in rec) or field not in rec:
            raise DatasetError(f"{path}:{lineno}: expected fields '_id' (or 'qid') and 'text' (or 'query')")
        qid = id_field(rec, ("_id", "qid"), f"{path}:{lineno}")
        text = rec[field]
        if not isinstance(text, str):
            raise DatasetError(f"{path}:{lineno}: field {field!r} of query {qid!r} is {json.dumps(text)}, not a string")
        out[qid] = (text, lineno)
    return out


def _doc_text(title: str | None, text: str | None) -> str:
    return f"{title or ''} {text or ''}".strip()


def _read_corpus(path: Path, needed: set[str]) -> dict[str, str]:
    """Texts of the ``needed`` documents only (the corpus is streamed, not held whole)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if path.suffix == ".parquet":
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
        if "docid" not in names or "text" not in names:
            raise DatasetError(f"{path}: expected columns 'docid' and 'text' (and optional 'title')")
        title = pl.col("title") if "title" in names else pl.lit("")
        frame = lf.filter(pl.col("docid").cast(pl.String).is_in(list(needed))).select(
            pl.col("docid").cast(pl.String), title.fill_null("").alias("title"), pl.col("text").fill_null("")
        ).collect()
        return {d: _doc_text(t, x) for d, t, x in frame.iter_rows()}
    out = {}
    for lineno, rec in read_jsonl(path, ()):
        where = f"{path}:{lineno}"
        if not ("_id" in rec or "docid" in rec) or "text" not in rec:
            raise DatasetError(f"{where}: expected fields '_id' (or 'docid') and 'text'")
        docid = id_field(rec, ("_id", "docid"), where)
        if docid in needed:
            out[docid] = _doc_text(text_field(rec, "title", where), text_field(rec, "text", where))
    return out


_write_chunk = write_parquet_atomic  # module attribute: the reliability benchmark swaps it for a full disk


# -- the job --------------------------------------------------------------------------------------
@dataclass
class _Query:
    pos: int  # position in the plan (order of first appearance); chunk = pos // chunk_queries
    qid: str
    text: str
    docids: list[str]
    texts: list[str]


def _plan(config: BatchRerankConfig) -> tuple[list[str], pl.LazyFrame]:
    check_candidates(config.candidates)  # bad lines, null/NaN scores, duplicates: one-line errors
    lf = scan_candidates(config.candidates)
    lf = lf.sort(["rank", "score", "docid"], descending=[False, True, False]).with_columns(
        pl.int_range(pl.len()).over("qid").alias("_pos")
    )
    if config.top_k is not None:
        lf = lf.filter(pl.col("_pos") < config.top_k)
    try:
        qids = scan_candidates(config.candidates).select("qid").unique(maintain_order=True).collect()["qid"].to_list()
    except pl.exceptions.PolarsError as err:
        raise DatasetError(f"{config.candidates}: cannot be parsed ({str(err).splitlines()[0]})") from None
    if not qids:
        raise DatasetError(f"{config.candidates}: no candidates")
    return qids, lf


def _rank_chunk(ranker: Ranker, queries: Sequence[_Query]) -> list[tuple[int, list[str], list[float], list[int]]]:
    out = []
    for q in queries:
        hits = ranker.rerank(q.text, q.texts, docids=q.docids)
        out.append((q.pos, [h.docid for h in hits], [h.score for h in hits], [h.rank for h in hits]))
    return out


class _RayRerankActor:
    """One ranker per Ray actor; scores a batch of whole queries (pyarrow in, pyarrow out)."""

    def __init__(self, factory: Callable[[], Ranker]) -> None:
        self.ranker = factory()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        queries = [
            _Query(p, qid, text, list(d), list(t))
            for p, qid, text, d, t in zip(*(batch.column(n).to_pylist() for n in ("pos", "qid", "text", "docids", "texts")))
        ]
        rows = _rank_chunk(self.ranker, queries)
        return pa.table({
            "pos": [r[0] for r in rows], "docids": [r[1] for r in rows],
            "scores": [r[2] for r in rows], "ranks": [r[3] for r in rows],
        })


LOOPBACK = "127.0.0.1"


def ray_init_kwargs(config: BatchRerankConfig) -> dict[str, Any]:
    """``ray.init`` arguments for a job: a private local cluster on loopback, or the named one.

    Without ``config.ray_address`` a new local cluster is started (``address="local"``, so neither
    ``RAY_ADDRESS`` nor a running ``ray start`` cluster is joined implicitly) with the node address
    on loopback and no dashboard. Joining an existing cluster happens only when the caller names it.
    """
    quiet = {"log_to_driver": False, "configure_logging": False}
    if config.ray_address:
        return {"address": config.ray_address, **quiet}
    return {"address": "local", "num_cpus": config.workers, "include_dashboard": False,
            "_node_ip_address": LOOPBACK, **quiet}


def _start_ray(config: BatchRerankConfig) -> None:
    """``ray.init`` with :func:`ray_init_kwargs`; a local cluster must come up on loopback.

    Ray on Linux replaces a loopback ``_node_ip_address`` by the machine's routable address unless its
    "clusters enabled" switch (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, read when the node
    starts) is off; it is turned off while the local node starts, so the GCS, raylet, workers and
    agents listen on 127.0.0.1 only. If the node still does not come up on loopback, Ray is shut down
    and the job refused.
    """
    import ray

    kwargs = ray_init_kwargs(config)
    if config.ray_address:
        ray.init(**kwargs)
        return
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without the switch
        ray_constants = None
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if ray_constants is not None and saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        if ray_constants is not None and saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(f"batch rerank: the local Ray cluster came up on {node}, not {LOOPBACK}; "
                           "start one yourself and pass ray_address (--ray-address) to use it")


def _ray_results(
    config: BatchRerankConfig, factory: Callable[[], Ranker], queries: list[_Query]
) -> Iterator[tuple[int, list[str], list[float], list[int]]]:
    import ray

    if not ray.is_initialized():
        _start_ray(config)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"pos": q.pos, "qid": q.qid, "text": q.text, "docids": q.docids, "texts": q.texts} for q in queries]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * config.workers)))
    ds = ds.map_batches(
        _RayRerankActor, fn_constructor_args=(factory,), batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=config.workers), num_cpus=1,
    )
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from zip(*(batch.column(n).to_pylist() for n in ("pos", "docids", "scores", "ranks")))


def _key(config: BatchRerankConfig, model_id: str) -> dict[str, Any]:
    return {
        "candidates_sha256": _sha256(config.candidates),
        "queries_sha256": _sha256(config.queries),
        "corpus_sha256": _sha256(config.corpus),
        "model": model_id,
        "top_k": config.top_k,
        "chunk_queries": config.chunk_queries,
        "output_format": "parquet" if config.output.suffix == ".parquet" else "trec",
        "tag": config.tag,
    }






def _assemble(config: BatchRerankConfig, files: list[Path]) -> None:
    """Concatenate the chunk files, in chunk order, into the output (streamed, written atomically)."""
    out = config.output
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if out.suffix == ".parquet":
            try:
                pl.scan_parquet(files).sink_parquet(tmp)
            except pl.exceptions.PolarsError as err:  # polars wraps the OS error (e.g. a full disk)
                raise OSError(errno.EIO, str(err).splitlines()[0]) from None
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for f in files:
                    fh.writelines(f"{q} Q0 {d} {r} {s:.6f} {config.tag}\n" for q, d, s, r in pl.read_parquet(f).iter_rows())
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def run_batch_rerank(
    config: BatchRerankConfig,
    ranker_factory: Callable[[], Ranker],
    model_id: str,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> BatchResult:
    """Rerank every query of ``config.candidates`` and write ``config.output``, resumably.

    Args:
        config: the job (see :class:`BatchRerankConfig`).
        ranker_factory: builds the ranker (called once locally, once per actor with Ray; it must
            be picklable for Ray, e.g. ``functools.partial(Reranker.load, model_dir)``).
        model_id: identifies the model in the manifest, so a resumed job cannot mix two models.
        progress: show a progress bar with docs/s.
        on_chunk: called with each chunk index once its file and manifest entry are written.

    Returns:
        A :class:`BatchResult`.

    Example:
        >>> cfg = BatchRerankConfig(Path("bm25.trec"), Path("queries.jsonl"), Path("corpus.jsonl.gz"), Path("out.trec"))  # doctest: +SKIP
        >>> run_batch_rerank(cfg, functools.partial(Reranker.load, "ce-onnx"), "ce-onnx").docs_per_s  # doctest: +SKIP
    """
    start = time.perf_counter()
    for path in (config.candidates, config.queries, config.corpus):
        if not Path(path).is_file():
            raise DatasetError(f"{path}: file not found")
    with job_lock(config.output, config.lock_file):
        return _run_job(config, ranker_factory, model_id, progress, on_chunk, start)


def _run_job(
    config: BatchRerankConfig,
    ranker_factory: Callable[[], Ranker],
    model_id: str,
    progress: bool,
    on_chunk: Callable[[int], None] | None,
    start: float,
) -> BatchResult:
    """The job of :func:`run_batch_rerank`, run while its lock is held."""
    key = _key(config, model_id)
    manifest = open_manifest(config, key, {"config": {k: str(v) for k, v in asdict(config).items()}, "complete": False})
    parts = config.parts_dir
    qids, lf = _plan(config)
    n_chunks = (len(qids) + config.chunk_queries - 1) // config.chunk_queries
    chunk_file = [f"chunk-{i:05d}.parquet" for i in range(n_chunks)]
    done = {i for i in range(n_chunks) if _chunk_ok(parts, manifest["chunks"].get(str(i)), chunk_file[i])}
    for i in range(n_chunks):
        if str(i) in manifest["chunks"] and i not in done:
            log.warning("rankwise: %s is missing or does not match its recorded sha256; redoing it", parts / chunk_file[i])
    if manifest.get("complete") and len(done) == n_chunks and config.output.is_file() and _sha256(config.output) == manifest.get("output_sha256"):
        return BatchResult(config.output, len(qids), manifest.get("docs", 0), n_chunks, n_chunks, time.perf_counter() - start)
    manifest["complete"] = False
    pending_chunks = [i for i in range(n_chunks) if i not in done]
    pending_qids = [q for i in pending_chunks for q in qids[i * config.chunk_queries : (i + 1) * config.chunk_queries]]
    pending = lf.filter(pl.col("qid").is_in(pending_qids))
    total_docs = int(pending.select(pl.len()).collect().item())
    query_lines = _read_queries(config.queries)
    absent_q = [q for q in pending_qids if q not in query_lines]
    if absent_q:
        raise DatasetError(f"{config.queries}: no text for query {absent_q[0]!r} of {config.candidates}")
    empty = [q for q in pending_qids if not query_lines[q][0].strip()]
    if empty:
        raise DatasetError(f"{config.queries}:{query_lines[empty[0]][1]}: query {empty[0]!r} is empty")
    queries = {q: text for q, (text, _) in query_lines.items()}
    corpus = _read_corpus(config.corpus, set(pending.select("docid").unique().collect()["docid"].to_list()))

    def chunk_work(i: int) -> list[_Query]:
        """The queries of chunk ``i`` with their candidates' texts, read from the lazy scan."""
        chunk_qids = qids[i * config.chunk_queries : (i + 1) * config.chunk_queries]
        rows = lf.filter(pl.col("qid").is_in(chunk_qids)).sort(["qid", "_pos"]).collect()
        by_qid = {qid: g["docid"].to_list() for (qid,), g in rows.group_by(["qid"], maintain_order=True)}
        out = []
        for k, qid in enumerate(chunk_qids):
            ids = by_qid[qid]
            absent = [d for d in ids if d not in corpus]
            if absent:
                raise DatasetError(f"{config.corpus}: no document {absent[0]!r} (candidate of query {qid!r})")
            out.append(_Query(i * config.chunk_queries + k, qid, queries[qid], ids, [corpus[d] for d in ids]))
        return out

    expected = {i: min(config.chunk_queries, len(qids) - i * config.chunk_queries) for i in pending_chunks}
    results: dict[int, dict[int, tuple]] = {i: {} for i in pending_chunks}

    def finish_chunk(i: int) -> None:
        got = results.pop(i)
        ordered = [got[p] for p in sorted(got)]
        frame = pl.DataFrame(
            [(qids[p], d, float(s), int(r)) for p, ds, ss, rs in ordered for d, s, r in zip(ds, ss, rs)],
            schema=RESULT_SCHEMA, orient="row",
        )
        file = parts / chunk_file[i]
        with _writing(file):
            parts.mkdir(parents=True, exist_ok=True)
            _write_chunk(frame, file)
        manifest["chunks"][str(i)] = {"file": chunk_file[i], "sha256": _sha256(file), "rows": frame.height,
                                      "queries": len(ordered)}
        with _writing(parts / MANIFEST):
            write_atomic(parts / MANIFEST, json.dumps(manifest, indent=1).encode())
        if on_chunk is not None:
            on_chunk(i)

    if config.engine == "ray" and pending_chunks:
        # Ray Data needs the whole input up front: the pending queries and their texts.
        stream: Iterable[tuple] = _ray_results(config, ranker_factory, [q for i in pending_chunks for q in chunk_work(i)])
    else:  # one chunk in memory at a time
        ranker = ranker_factory() if pending_chunks else None
        stream = (r for i in pending_chunks for q in chunk_work(i) for r in _rank_chunk(ranker, [q]))
    bar = _progress(progress, total_docs)
    with bar:
        task = bar.add_task("rerank", total=total_docs)
        for result in stream:
            pos = result[0]
            chunk = pos // config.chunk_queries
            results[chunk][pos] = result
            bar.update(task, advance=len(result[1]))
            if len(results[chunk]) == expected[chunk]:
                finish_chunk(chunk)
    missing = [i for i in pending_chunks if str(i) not in manifest["chunks"] or i in results]
    if missing:
        raise RuntimeError(f"batch rerank: chunks {missing[:5]} received no results")
    with _writing(config.output):
        _assemble(config, [parts / chunk_file[i] for i in range(n_chunks)])
    manifest.update(complete=True, output_sha256=_sha256(config.output),
                    docs=sum(e["rows"] for e in manifest["chunks"].values()))
    with _writing(parts / MANIFEST):
        write_atomic(parts / MANIFEST, json.dumps(manifest, indent=1).encode())
    return BatchResult(config.output, len(qids), total_docs, n_chunks, len(done), time.perf_counter() - start)


def _progress(enabled: bool, total: int):  # noqa: ANN202 - a rich Progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class _DocsPerSecond(ProgressColumn):
        def render(self, task) -> Text:  # noqa: ANN001
            return Text(f"{task.speed or 0.0:.1f} docs/s")

    return Progress(
        TextColumn("rerank"), BarColumn(), MofNCompleteColumn(), _DocsPerSecond(), TimeRemainingColumn(),
        disable=not enabled, transient=False,
    )
