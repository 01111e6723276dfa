"""Top-k recommendations for every user of a dataset, written to one parquet file, resumably.

Users are taken in dataset order, cut into chunks of ``chunk_users``; each chunk is scored in
batches of ``batch_users`` (one user-tower call and one faiss search per batch, see
:meth:`rankwise.serving.api.Recommender.recommend_many`) and written as
``<output>.parts/chunk-NNNNN.parquet`` (temporary file + rename), recorded with its sha256 in
``manifest.json``. A killed job resumed with ``resume=True`` keeps the chunks that match, redoes the
rest and assembles the same file as an uninterrupted run; the parts are deleted once the output is
in place. One job per output (``<output>.lock``).

Output columns: ``user_id`` (string), ``rank`` (1..k), ``item_id`` (string), ``score`` (float).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from rankwise.core.chunks import (MANIFEST, ChunkedOutput, chunk_done, job_lock, open_manifest, sha256_file,
                                   write_parquet_atomic, writing)
from rankwise.core.io import DatasetError
from rankwise.core.outputs import write_atomic

__all__ = ["AllUsersConfig", "AllUsersResult", "recommend_all_users", "dataset_histories", "export_all_users"]

SCHEMA = {"user_id": pl.String, "rank": pl.Int64, "item_id": pl.String, "score": pl.Float64}


@dataclass(frozen=True)
class AllUsersConfig(ChunkedOutput):
    """One all-users export.

    Args:
        output: the ``.parquet`` file to write.
        k: items per user.
        exclude_seen: leave each user's history out of their list.
        batch_users: users per user-tower call.
        chunk_users: users per chunk file (the unit of atomic writes and of work lost on a kill).
        resume: continue a killed job from ``<output>.parts/manifest.json``.
        overwrite: discard an earlier job's parts and output.
    """

    output: Path
    k: int = 10
    exclude_seen: bool = True
    batch_users: int = 512
    chunk_users: int = 20_000
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if Path(self.output).suffix != ".parquet":
            raise ValueError(f"--output {self.output}: the all-users export writes .parquet")
        for name in ("k", "batch_users", "chunk_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"AllUsersConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.resume and self.overwrite:
            raise ValueError("AllUsersConfig: choose one of resume and overwrite")


@dataclass(frozen=True)
class AllUsersResult:
    """What a job did: output path, users written, chunks reused from an earlier run, throughput."""

    output: Path
    users: int
    chunks: int
    chunks_reused: int
    seconds: float
    skipped_users: int = 0  # users none of whose items the model knows (nothing to recommend from)

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0


def _fingerprint(histories: Sequence[tuple[str, Sequence[str]]]) -> str:
    """sha256 over every user id and history: a resumed job refuses other input."""
    digest = hashlib.sha256()
    for user, items in histories:
        digest.update(json.dumps([user, [str(i) for i in items]]).encode())
    return digest.hexdigest()




def recommend_all_users(
    recommend_many: Callable[[Sequence[Sequence[str]], int, bool], list[list[Any]]],
    histories: Sequence[tuple[str, Sequence[str]]],
    config: AllUsersConfig,
    model_id: str,
    on_chunk: Callable[[int], None] | None = None,
) -> AllUsersResult:
    """Write the top-``k`` items of every user in ``histories`` to ``config.output``.

    Args:
        recommend_many: ``(histories, k, exclude_seen) -> hits per user`` (each hit with ``item_id``,
            ``score``, ``rank``), e.g. :meth:`Recommender.recommend_many`.
        histories: ``(user_id, item ids oldest first)`` per user, in output order.
        config: see :class:`AllUsersConfig`.
        model_id: identifies the model in the manifest (a resumed job cannot mix two models).
        on_chunk: called with each chunk index once its file and manifest entry are written.

    Example:
        >>> rec = Recommender.load("runs/sasrec-ml1m")  # doctest: +SKIP
        >>> recommend_all_users(rec.recommend_many, users, AllUsersConfig(Path("top10.parquet")), "sasrec-ml1m")  # doctest: +SKIP
    """
    start = time.perf_counter()
    users = [u for u, _ in histories]
    if len(set(users)) != len(users):
        raise DatasetError(f"all-users export: user id {next(u for u in users if users.count(u) > 1)!r} appears twice")
    with job_lock(config.output, config.lock_file):
        key = {"model": model_id, "k": config.k, "exclude_seen": config.exclude_seen, "chunk_users": config.chunk_users,
               "users": len(users), "histories_sha256": _fingerprint(histories)}
        manifest = open_manifest(config, key, {})
        parts = config.parts_dir
        n_chunks = (len(histories) + config.chunk_users - 1) // config.chunk_users
        names = [f"chunk-{i:05d}.parquet" for i in range(n_chunks)]
        done = {i for i in range(n_chunks) if chunk_done(parts, manifest["chunks"].get(str(i)), names[i])}
        for i in (i for i in range(n_chunks) if i not in done):
            chunk = histories[i * config.chunk_users:(i + 1) * config.chunk_users]
            rows = []
            for b in range(0, len(chunk), config.batch_users):
                batch = chunk[b:b + config.batch_users]
                for (user, _), hits in zip(batch, recommend_many([h for _, h in batch], config.k, config.exclude_seen)):
                    rows.extend((user, h.rank, h.item_id, h.score) for h in hits)
            frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
            file = parts / names[i]
            with writing(file):
                parts.mkdir(parents=True, exist_ok=True)
                write_parquet_atomic(frame, file)
            manifest["chunks"][str(i)] = {"file": names[i], "sha256": sha256_file(file), "rows": frame.height}
            with writing(parts / MANIFEST):
                write_atomic(parts / MANIFEST, json.dumps(manifest, indent=1).encode())
            if on_chunk is not None:
                on_chunk(i)
        tmp = config.output.with_name(config.output.name + ".tmp")
        with writing(config.output):
            try:
                files = [parts / n for n in names]
                (pl.scan_parquet(files) if files else pl.LazyFrame(schema=SCHEMA)).sink_parquet(tmp)
                tmp.replace(config.output)
            finally:
                tmp.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)  # the output is complete: its chunks are no longer needed
    return AllUsersResult(config.output, len(users), n_chunks, len(done), time.perf_counter() - start)


def dataset_histories(dataset: str) -> list[tuple[str, list[str]]]:
    """``(user_id, item ids oldest first)`` of every user of an interactions dataset, by user id
    (users with a single interaction included: serving needs no leave-one-out split)."""
    from rankwise.eval.datasets.interactions import load_interactions

    data = load_interactions(dataset, min_interactions=1)
    grouped = data.interactions.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return [(str(u), [str(i) for i in items]) for u, items in grouped.iter_rows()]


def export_all_users(
    model_dir: str | Path,
    config: AllUsersConfig,
    dataset: str | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> AllUsersResult:
    """Load a recommender (PyTorch directory or ONNX export) and write every user's top-k of
    ``dataset`` (default: the one the model was trained on) with :func:`recommend_all_users`."""
    from rankwise.core.model_dir import ModelDirError, fingerprint_model_dir
    from rankwise.serving.api import Recommender

    model_dir = Path(model_dir)
    rec = Recommender.load(model_dir, device=device, trust_remote_code=trust_remote_code)
    meta_file = model_dir / ("serving.json" if rec.backend == "onnx" else "rankwise.json")
    name = dataset or json.loads(meta_file.read_text()).get("dataset")
    if not name:
        raise ModelDirError(f"{meta_file}: field 'dataset' is missing; pass --dataset")
    histories = dataset_histories(name)
    known = set(rec.item_ids)
    servable = [(u, h) for u, h in histories if any(i in known for i in h)]
    if not servable:
        raise DatasetError(f"dataset {name}: no user has an item known to the model {model_dir}")
    result = recommend_all_users(rec.recommend_many, servable, config, fingerprint_model_dir(model_dir), on_chunk)
    return dataclasses.replace(result, skipped_users=len(histories) - len(servable))
