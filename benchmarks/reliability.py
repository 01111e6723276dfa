"""Reliability probes of issue 23 (item 4): bad inputs, kill -9 and resume, concurrent jobs, threads, disk full.

What it measures: one row per probe with what a user would expect (``expected``), what happened
(``observed``, short text), ``pass`` and the probe's wall time (``seconds``). The probes drive the
installed ``rankwise`` CLI as separate processes (so exit codes, stderr, ``kill -9`` and process
groups are real) and the library in-process where a fault has to be injected:

1. **Bad inputs** for ``eval beir``, ``rerank``, ``recommend train``, ``recommend predict``, ``export``
   and ``train cross-encoder`` (missing file, malformed line, NaN score/grade/index, existing output
   without ``--overwrite``, bad UTF-8, empty file, output of the wrong kind): exit code 1, exactly one
   line on stderr, no ``Traceback``, nothing written at the output path (an existing output unchanged).
2. **kill -9** of ``rankwise rerank`` (local engine) at seeded random points (after a random number of
   finished chunks, plus a random fraction of a chunk's time), then ``--resume``: the output is
   byte-identical to an uninterrupted run, and nothing half-written ever sits at the output path.
3. The same with ``--engine ray --workers 2``: the driver's process group is killed with SIGKILL;
   afterwards every process of the job (found by an environment marker the job's processes inherit,
   and by the job's own ``RAY_TMPDIR``) must be gone; any left is killed by its pid and counted.
4. **Two jobs on one output** started at once (and a ``--resume`` started while the first job runs):
   the second is refused with one line, and the output equals a clean run.
5. **8-thread serving** of every exported model kind (cross-encoder, bi-encoder, ERank, SASRec,
   ReaRec, HCN, HLLM user tower): ``Reranker.load`` / ``Recommender.load`` on the ONNX export, 200
   requests from 8 threads equal the sequential results exactly.
6. **Disk full during a chunk write**: in-process, the chunk writer of ``rankwise.serving.batch``
   raises ``OSError(ENOSPC)`` at chunk k; through the CLI, ``--output`` lies on a small tmpfs that is
   filled up while the job runs (root only; skipped otherwise). Expected: one clean error, no output
   file, a valid manifest, and ``--resume`` once space is back gives the byte-identical output.

Models and data are tiny, random and built here (seeded): a 2-layer, 32-wide BERT cross-encoder with
the bundled MiniLM tokenizer (scored one pair per forward pass, so a job's chunks are written over a
few seconds), 16-wide recommenders, synthetic texts. Nothing is downloaded.

Command: ``RANKWISE_DATA=/work/shared/data .venv/bin/python benchmarks/reliability.py`` (add ``--no-ray``
to skip the Ray probes). Hardware of the committed run: 2 shared CPU cores, CPU only; the whole run
takes about 3.5 minutes there.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rankwise.eval.report import RESULTS_DIR, plot_bars, print_table, write_results
from rankwise.testing import tiny_bi_encoder_dir, tiny_cross_encoder_dir, tiny_erank_dir, tiny_recommender_dir

PROTOCOL = ("issue 23 probe matrix: bad inputs per command (exit 1, one stderr line, no traceback, no output), "
            "kill -9 + --resume of rerank (local and Ray; byte-identical output), two jobs on one output, "
            "8-thread serving of every ONNX export kind, disk full during a chunk write; tiny random models, seeded")


GROUPS = ("bad", "kill", "ray", "concurrent", "disk", "serving")


@dataclass
class BenchConfig:
    """Knobs of the benchmark (defaults: the committed run)."""

    seed: int = 0
    queries: int = 24  # rerank job: queries ...
    docs_per_query: int = 60  # ... x candidates each
    chunk_queries: int = 2  # queries per chunk: 12 chunks
    doc_words: int = 40  # words per synthetic document
    local_kills: int = 3  # kill points of the local engine
    ray: bool = True  # run the Ray probes
    ray_kills: int = 2  # kill points under --engine ray --workers 2
    threads: int = 8  # serving probe: client threads
    requests: int = 200  # serving probe: requests per model
    tmpfs: bool = True  # disk full through the CLI on a small tmpfs (needs root)
    timeout_s: float = 240.0  # per CLI command
    groups: tuple[str, ...] = GROUPS  # which probe groups run (all for the committed run)


# -- tiny models and data ------------------------------------------------------------------------------
WORDS = [a + b for a in ("ka", "lo", "mi", "nu", "pe", "ro", "si", "ta", "vu", "ze", "bi", "do")
         for b in ("ran", "mel", "tis", "gon", "ba", "cor", "dex", "fu", "lin", "sa")]


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def write_rerank_job(folder: Path, cfg: BenchConfig) -> dict[str, Path]:
    """Synthetic corpus, queries and a first-stage TREC run (scores descending) for ``rankwise rerank``."""
    rng = np.random.default_rng(cfg.seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_docs = max(200, cfg.docs_per_query * 4)
    docs = [{"_id": f"d{i}", "title": _text(rng, 3), "text": _text(rng, cfg.doc_words)} for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": _text(rng, 4)} for i in range(cfg.queries)]
    lines = []
    for q in queries:
        picked = rng.choice(n_docs, cfg.docs_per_query, replace=False)
        lines += [f"{q['_id']} Q0 d{d} {r + 1} {100.0 - r:.2f} bm25\n" for r, d in enumerate(picked)]
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl", "candidates": folder / "bm25.trec"}
    paths["corpus"].write_text("".join(json.dumps(d) + "\n" for d in docs))
    paths["queries"].write_text("".join(json.dumps(q) + "\n" for q in queries))
    paths["candidates"].write_text("".join(lines))
    return paths


def write_beir(folder: Path, splits: tuple[str, ...] = ("test", "train")) -> Path:
    """A 6-document, 3-query BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"document {i} about {WORDS[i]} and {WORDS[i + 7]}"} for i in range(6)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": WORDS[i]}) + "\n" for i in range(3)))
    for split in splits:
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return folder


def write_interactions(folder: Path, body: bytes | None = None) -> Path:
    """A recsys dataset folder: ``interactions.csv.gz`` (5 users x 6 items of ``i1..i40``) or ``body`` as given."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    if body is None:
        body = ("user_id,item_id,seq_index\n" + "".join(
            f"u{u},i{(u * 7 + j) % 40 + 1},{j}\n" for u in range(5) for j in range(6))).encode()
    (folder / "interactions.csv.gz").write_bytes(gzip.compress(body))
    return folder


# -- running the CLI -----------------------------------------------------------------------------------
MARKER_ENV = "RANKWISE_RELIABILITY_PROBE"


def rankwise_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("rankwise")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rankwise.cli"]


def probe_env(marker: str, ray_tmp: Path | None = None) -> dict[str, str]:
    """The environment of every CLI run: offline, one thread, tagged with ``marker`` (inherited by children)."""
    env = {**os.environ, MARKER_ENV: marker, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return env


@dataclass
class Done:
    rc: int
    stdout: str
    stderr: str
    seconds: float


def cli(args: list[str], env: dict[str, str], timeout: float) -> Done:
    t = time.perf_counter()
    try:
        p = subprocess.run([*rankwise_cmd(), *args], env=env, capture_output=True, text=True, timeout=timeout,
                           start_new_session=True)
    except subprocess.TimeoutExpired as err:
        return Done(124, str(err.stdout or ""), f"timed out after {timeout:.0f}s", time.perf_counter() - t)
    return Done(p.returncode, p.stdout, p.stderr, time.perf_counter() - t)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a CLI run in its own process group (so SIGKILL reaches the whole group)."""
    fh = open(log, "w")  # noqa: SIM115 - closed by finish()
    return subprocess.Popen([*rankwise_cmd(), *args], env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> Done:
    t = time.perf_counter()
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        rc = 124
    text = log.read_text(errors="replace")
    return Done(rc, text, text, time.perf_counter() - t)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def probe_processes(marker: str, ray_tmp: Path | None = None) -> list:
    """Live processes started by this benchmark's CLI runs: the environment marker, or our RAY_TMPDIR."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            mine = proc.environ().get(MARKER_ENV) == marker
            if not mine and ray_tmp is not None:
                mine = any(str(ray_tmp) in part for part in (proc.info["cmdline"] or []))
        except (psutil.Error, OSError):
            continue
        if mine and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def reap(marker: str, ray_tmp: Path | None = None, grace_s: float = 10.0) -> tuple[int, float, int]:
    """Wait up to ``grace_s`` for this benchmark's processes to exit, then SIGKILL the rest by pid.

    Returns (processes alive at the start, seconds until none was left or the grace ran out, processes killed).
    """
    import psutil

    t = time.monotonic()
    alive = len(probe_processes(marker, ray_tmp))
    while (left := probe_processes(marker, ray_tmp)) and time.monotonic() < t + grace_s:
        time.sleep(0.25)
    waited = time.monotonic() - t
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return alive, waited, len(left)


def chunks_done(parts: Path) -> int:
    try:
        return len(json.loads((parts / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _progress_bar(line: str) -> bool:
    """A tqdm line (e.g. transformers' "Loading weights ... 41/41 [00:00<00:00, 6933.01it/s]"): not a message."""
    segments = [seg for seg in line.split("\r") if seg.strip()]
    return bool(segments) and all(seg.rstrip().endswith(("it/s]", "s/it]", "?it/s]")) for seg in segments)


def stderr_lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, progress bars left out."""
    return [line for line in text.split("\n") if line.strip() and not _progress_bar(line)]


def row(probe: str, command: str, expected: str, observed: str, ok: bool, seconds: float) -> dict:
    return {"probe": probe, "command": command, "expected": expected, "observed": observed, "pass": bool(ok),
            "seconds": round(float(seconds), 2)}


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under ``path`` (or the file itself) with its bytes; ``None`` when absent."""
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


# -- 1. bad inputs ---------------------------------------------------------------------------------------
BAD_EXPECTED = "exit 1, one stderr line naming {what}, no traceback, nothing written at the output"


def bad_input_cases(work: Path, job: dict[str, Path], ce: Path, sasrec: Path) -> list[tuple[str, str, list[str], Path | None, str]]:
    """(probe, command, argv, output path, text the error must contain) for every command."""
    bad = work / "bad"
    bad.mkdir()

    def file(name: str, data: bytes) -> Path:
        (bad / name).write_bytes(data)
        return bad / name

    def beir(name: str, **files: bytes) -> Path:
        folder = write_beir(bad / name)
        for rel, data in files.items():
            target = folder / rel.replace("__", "/")
            if data is None:
                target.unlink()
            else:
                target.write_bytes(data)
        return folder

    def model_copy(name: str, src: Path) -> Path:
        return Path(shutil.copytree(src, bad / name))

    def taken(name: str, kind: str = "dir") -> Path:
        path = bad / name
        if kind == "dir":
            path.mkdir()
            (path / "rankwise.json").write_text('{"kind": "earlier"}')
        else:
            path.write_text("an earlier output\n")
        return path

    cases: list[tuple[str, str, list[str], Path | None, str]] = []

    # rerank
    no_weights_ce = model_copy("ce-no-weights", ce)
    for weights in no_weights_ce.glob("*.safetensors"):
        weights.unlink()
    base = ["rerank", "--model", str(ce), "--corpus", str(job["corpus"]), "--queries", str(job["queries"]), "--device", "cpu"]
    good = ["--candidates", str(job["candidates"])]
    text = job["candidates"].read_text()
    rerank = [
        ("missing weight file", ["rerank", "--model", str(no_weights_ce), *base[3:], *good], "ce-no-weights"),
        ("missing candidates file", [*base, "--candidates", str(bad / "absent.trec")], "absent.trec"),
        ("malformed TREC line", [*base, "--candidates", str(file("short.trec", (text + "q1 Q0 d1 1 bm25\n").encode()))], "short.trec:"),
        ("NaN score (jsonl)", [*base, "--candidates", str(file("nan.jsonl", b'{"qid": "q0", "docid": "d1", "score": 1.0}\n'
                                                                  b'{"qid": "q0", "docid": "d2", "score": NaN}\n'))], "nan.jsonl:2"),
        ("bad UTF-8 in queries", [*base[:5], "--queries", str(file("queries-bad.jsonl", job["queries"].read_bytes()[:40] + b"\xff\xfe"
                                                                     + job["queries"].read_bytes()[40:])), *base[7:], *good],
         "queries-bad.jsonl"),
        ("empty candidates file", [*base, "--candidates", str(file("empty.trec", b""))], "empty.trec"),
    ]
    for name, argv, needle in rerank:
        out = bad / f"rerank-{len(cases)}.trec"
        cases.append((name, "rerank", [*argv, "--output", str(out)], out, needle))
    out = taken("rerank-taken.trec", "file")
    cases.append(("existing output without --overwrite", "rerank", [*base, *good, "--output", str(out)], out, "--overwrite"))

    # eval beir
    eval_cases = [
        ("missing queries file", beir("e-missing", **{"queries.jsonl": None}), "queries.jsonl"),
        ("malformed corpus line", beir("e-malformed", **{"corpus.jsonl": b'{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": \n'}), "corpus.jsonl:2"),
        ("NaN grade in qrels", beir("e-nan", **{"qrels__test.tsv": b"query-id\tcorpus-id\tscore\nq0\td0\tnan\n"}), "test.tsv:2"),
        ("bad UTF-8 in queries", beir("e-utf8", **{"queries.jsonl": b'{"_id": "q0", "text": "ok"}\n{"_id": "q1", "text": "\xff"}\n'}), "queries.jsonl:2"),
        ("empty corpus file", beir("e-empty", **{"corpus.jsonl": b""}), "corpus.jsonl"),
    ]
    for name, folder, needle in eval_cases:
        out = bad / f"eval-{len(cases)}"
        cases.append((name, "eval beir", ["eval", "beir", "--dataset", str(folder), "--reranker", "none", "--output-dir", str(out)], out, needle))
    out = bad / "eval-taken"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    cases.append(("existing output without --overwrite", "eval beir",
                  ["eval", "beir", "--dataset", str(write_beir(bad / "e-ok")), "--reranker", "none", "--output-dir", str(out)], out, "--overwrite"))

    # recommend train
    header = b"user_id,item_id,seq_index\n"
    rows = b"".join(f"u{u},i{j + 1},{j}\n".encode() for u in range(4) for j in range(4))
    rec_cases = [
        ("missing interactions file", bad / "r-missing", "r-missing"),
        ("malformed line (2 fields)", write_interactions(bad / "r-short", header + b"u0,i1,0\nu0,i2\n" + rows), "interactions.csv.gz:3"),
        ("NaN seq_index", write_interactions(bad / "r-nan", header + b"u9,i1,0\nu9,i2,nan\n" + rows), "interactions.csv.gz:3"),
        ("bad UTF-8", write_interactions(bad / "r-utf8", header + b"u0,i1,0\nu0,\xff,1\n" + rows), "not valid UTF-8"),
        ("empty file", write_interactions(bad / "r-empty", b""), "empty file"),
    ]
    (bad / "r-missing").mkdir()
    for name, folder, needle in rec_cases:
        out = bad / f"rec-{len(cases)}"
        cases.append((name, "recommend train", ["recommend", "train", "--dataset", str(folder), "--epochs", "1", "--output", str(out)], out, needle))
    data_ok = write_interactions(bad / "r-ok")
    out = taken("rec-taken")
    cases.append(("existing output without --overwrite", "recommend train",
                  ["recommend", "train", "--dataset", str(data_ok), "--epochs", "1", "--output", str(out)], out, "--overwrite"))
    out = taken("rec-file", "file")
    cases.append(("output is a file", "recommend train",
                  ["recommend", "train", "--dataset", str(data_ok), "--epochs", "1", "--output", str(out)], out, "not a directory"))

    # recommend predict (writes nothing: the model directory must stay as it was)
    broken_meta = model_copy("p-meta", sasrec)
    (broken_meta / "rankwise.json").write_text((sasrec / "rankwise.json").read_text()[:30])
    no_weights = model_copy("p-weights", sasrec)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    utf8_meta = model_copy("p-utf8", sasrec)
    (utf8_meta / "rankwise.json").write_bytes(b'{"kind": "sas\xffrec"}')
    predict = [
        ("missing model directory", bad / "p-absent", data_ok, "u1", "p-absent"),
        ("malformed rankwise.json", broken_meta, data_ok, "u1", "rankwise.json"),
        ("missing weight file", no_weights, data_ok, "u1", "p-weights"),
        ("bad UTF-8 in rankwise.json", utf8_meta, data_ok, "u1", "rankwise.json"),
        ("bad UTF-8 in interactions", sasrec, write_interactions(bad / "p-utf8-data", header + b"u1,i1,0\nu1,\xff,1\nu1,i3,2\n"), "u1", "not valid UTF-8"),
        ("empty interactions file", sasrec, write_interactions(bad / "p-empty-data", b""), "u1", "empty file"),
        ("user not in the dataset", sasrec, data_ok, "nobody", "'nobody'"),
    ]
    for name, model, data, user, needle in predict:
        cases.append((name, "recommend predict",
                      ["recommend", "predict", "--model-dir", str(model), "--dataset", str(data), "--user", user], model, needle))

    # export
    ce_meta = model_copy("x-meta", ce)
    (ce_meta / "rankwise.json").write_text("{not json")
    ce_weights = model_copy("x-weights", ce)
    for weights in ce_weights.glob("*.safetensors"):
        weights.unlink()
    ce_utf8 = model_copy("x-utf8", ce)
    (ce_utf8 / "rankwise.json").write_bytes(b'{"kind": "cross-\xffencoder"}')
    export = [
        ("missing model directory", bad / "x-absent", "x-absent"),
        ("malformed rankwise.json", ce_meta, "rankwise.json"),
        ("missing weight file", ce_weights, "x-weights"),
        ("bad UTF-8 in rankwise.json", ce_utf8, "rankwise.json"),
    ]
    for name, model, needle in export:
        out = bad / f"export-{len(cases)}"
        cases.append((name, "export", ["export", "--model-dir", str(model), "--output", str(out)], out, needle))
    for name, out, needle in (("existing output without --overwrite", taken("x-taken"), "--overwrite"),
                              ("output is a file", taken("x-file", "file"), "not a directory"),
                              ("output is the model directory", ce, "--model-dir")):
        cases.append((name, "export", ["export", "--model-dir", str(ce), "--output", str(out)], out, needle))

    # train cross-encoder
    train = [
        ("missing queries file", beir("t-missing", **{"queries.jsonl": None}), "queries.jsonl"),
        ("malformed qrels line", beir("t-malformed", **{"qrels__train.tsv": b"query-id\tcorpus-id\tscore\nq0\n"}), "train.tsv:2"),
        ("NaN grade in qrels", beir("t-nan", **{"qrels__train.tsv": b"query-id\tcorpus-id\tscore\nq0\td0\tnan\n"}), "train.tsv:2"),
        ("bad UTF-8 in corpus", beir("t-utf8", **{"corpus.jsonl": b'{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": "\xff"}\n'}), "corpus.jsonl:2"),
        ("empty queries file", beir("t-empty", **{"queries.jsonl": b""}), "queries.jsonl"),
    ]
    for name, folder, needle in train:
        out = bad / f"train-{len(cases)}"
        cases.append((name, "train cross-encoder", ["train", "cross-encoder", "--dataset", str(folder), "--max-steps", "1",
                                                    "--model", str(ce), "--output", str(out)], out, needle))
    out = taken("t-taken")
    cases.append(("existing output without --overwrite", "train cross-encoder",
                  ["train", "cross-encoder", "--dataset", str(write_beir(bad / "t-ok")), "--max-steps", "1", "--model", str(ce),
                   "--output", str(out)], out, "--overwrite"))
    return cases


def bad_input_rows(cases: list, env: dict[str, str], cfg: BenchConfig) -> list[dict]:
    rows = []
    for name, command, argv, output, needle in cases:
        before = snapshot(output) if output is not None else None
        parts = output.with_name(output.name + ".parts") if output is not None else None
        parts_before = parts.exists() if parts is not None else False
        done = cli(argv, env, cfg.timeout_s)
        lines = stderr_lines(done.stderr)
        traceback = "Traceback" in done.stdout + done.stderr
        unchanged = output is None or snapshot(output) == before
        no_parts = parts is None or parts.exists() == parts_before
        named = bool(lines) and needle in lines[0]
        ok = done.rc == 1 and len(lines) == 1 and lines[0].startswith("error:") and named and not traceback and unchanged and no_parts
        first = lines[0] if lines else "(no stderr)"
        observed = (f"exit {done.rc}, {len(lines)} stderr line(s){', traceback' if traceback else ''}"
                    f"{'' if unchanged else ', OUTPUT CHANGED'}{'' if no_parts else ', parts dir left'}: {first[:160]}")
        rows.append(row(f"{command}: {name}", command, BAD_EXPECTED.format(what=repr(needle)), observed, ok, done.seconds))
    return rows


# -- 2./3. kill -9 and --resume -----------------------------------------------------------------------------
def rerank_args(job: dict[str, Path], model: Path, output: Path, cfg: BenchConfig, *extra: str) -> list[str]:
    return ["rerank", "--model", str(model), "--candidates", str(job["candidates"]), "--corpus", str(job["corpus"]),
            "--queries", str(job["queries"]), "--output", str(output), "--chunk-queries", str(cfg.chunk_queries),
            "--batch-size", "1", "--threads", "1", "--device", "cpu", "--json", *extra]


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return {}


def kill_at(proc: subprocess.Popen, parts: Path, chunks: int, delay_s: float, timeout: float) -> tuple[int, bool]:
    """SIGKILL ``proc``'s group ``delay_s`` after ``chunks`` chunks are recorded; (chunks recorded, killed in time)."""
    deadline = time.monotonic() + timeout
    while chunks_done(parts) < chunks and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay_s)
    alive = proc.poll() is None
    kill_group(proc)
    return chunks_done(parts), alive


def kill_resume_row(probe: str, command: str, job: dict[str, Path], model: Path, work: Path, cfg: BenchConfig,
                    env: dict[str, str], clean: bytes, kills: list[tuple[int, float]], engine: list[str],
                    marker: str, ray_tmp: Path | None = None) -> dict:
    """Run, kill -9 at each (chunks, delay) point (each run resuming the last), then resume to the end."""
    t = time.perf_counter()
    out = work / f"{probe.replace(' ', '-').replace('#', '')}.trec"
    parts = out.with_name(out.name + ".parts")
    notes, ok = [], True
    for n, (chunks, delay) in enumerate(kills):
        proc = start(rerank_args(job, model, out, cfg, *engine, *(["--resume"] if n else [])), env, work / f"{out.stem}-{n}.log")
        done_at, killed = kill_at(proc, parts, chunks, delay, cfg.timeout_s)
        alive, waited, strays = reap(marker, ray_tmp)
        half = out.exists() and out.read_bytes() != clean
        ok &= killed and not half and strays == 0
        notes.append(f"kill {n + 1} (target {chunks} chunks +{delay:.2f}s) at {done_at} chunks{'' if killed else ' (job had ended)'}"
                     f"{', half-written output' if half else ''}"
                     f"{f', {alive} job processes outlived the kill, gone after {waited:.1f}s' if alive and not strays else ''}"
                     f"{f', {strays} stray processes left (killed by pid)' if strays else ''}")
    done = cli(rerank_args(job, model, out, cfg, *engine, "--resume"), env, cfg.timeout_s)
    _, _, strays = reap(marker, ray_tmp)
    summary = last_json(done.stdout)
    same = out.is_file() and out.read_bytes() == clean
    ok &= done.rc == 0 and same and strays == 0
    notes.append(f"resume exit {done.rc}, reused {summary.get('chunks_reused', '?')}/{summary.get('chunks', '?')} chunks, "
                 f"output {'byte-identical' if same else 'DIFFERS from the clean run'}{f', {strays} stray processes' if strays else ''}")
    if done.rc != 0:
        notes.append(stderr_lines(done.stderr)[-1][:160] if stderr_lines(done.stderr) else "")
    return row(probe, command, "killed job resumes to output byte-identical to an uninterrupted run; no half-written "
               "output; no stray processes", "; ".join(notes), ok, time.perf_counter() - t)


def kill_points(rng: np.random.Generator, n_chunks: int, count: int, chunk_s: float, span: float = 1.0) -> list[tuple[int, float]]:
    """``count`` seeded points spread over the first ``span`` of the job: (chunks finished, extra delay up to
    one chunk's time). Ray returns chunks in bursts, so its points are drawn from the first half."""
    points = []
    for j in range(count):
        lo, hi = span * j / count, span * (j + 1) / count
        chunks = int(rng.uniform(lo, hi) * max(1, n_chunks - 2))
        points.append((chunks, float(rng.uniform(0.0, chunk_s))))
    return points


# -- 4. two jobs on one output -------------------------------------------------------------------------------
def concurrent_rows(job: dict[str, Path], model: Path, work: Path, cfg: BenchConfig, env: dict[str, str], clean: bytes) -> list[dict]:
    rows = []
    expected = "the second job is refused with one line (or they serialise); the output equals a clean run"
    for name, second_after_chunks in (("two jobs started at once", None), ("--resume started while the job runs", 1)):
        t = time.perf_counter()
        out = work / f"concurrent-{len(rows)}.trec"
        parts = out.with_name(out.name + ".parts")
        first = start(rerank_args(job, model, out, cfg), env, work / f"concurrent-{len(rows)}-a.log")
        if second_after_chunks is not None:
            while chunks_done(parts) < second_after_chunks and first.poll() is None:
                time.sleep(0.02)
        extra = ["--resume"] if second_after_chunks is not None else []
        second = start(rerank_args(job, model, out, cfg, *extra), env, work / f"concurrent-{len(rows)}-b.log")
        a = finish(first, work / f"concurrent-{len(rows)}-a.log", cfg.timeout_s)
        b = finish(second, work / f"concurrent-{len(rows)}-b.log", cfg.timeout_s)
        same = out.is_file() and out.read_bytes() == clean
        refused = sorted([a.rc, b.rc]) == [0, 1]
        loser = b if b.rc == 1 else a
        lines = stderr_lines(loser.stderr)
        clean_error = refused and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in loser.stderr
        ok = same and clean_error
        what = (f"job A exit {a.rc}, job B exit {b.rc}"
                + (f"; refused: {lines[0][:140]}" if refused and lines else "; both ran at once" if a.rc == b.rc == 0 else "")
                + f"; output {'equals the clean run' if same else 'DIFFERS or missing'}")
        rows.append(row(f"concurrent: {name}", "rerank" + (" --resume" if extra else ""), expected, what, ok, time.perf_counter() - t))
    return rows


# -- 5. 8-thread serving -----------------------------------------------------------------------------------
def serving_rows(work: Path, ce: Path, cfg: BenchConfig) -> list[dict]:
    import torch

    from rankwise.serving.api import Recommender, Reranker
    from rankwise.serving.export import export_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(cfg.seed + 5)
    queries = [_text(rng, 3) for _ in range(6)]
    docs = [_text(rng, int(rng.integers(2, 20))) for _ in range(10)]
    builders = {
        "cross-encoder": lambda d: ce,
        "bi-encoder": tiny_bi_encoder_dir,
        "erank": lambda d: tiny_erank_dir(d, queries + docs),
        "sasrec": lambda d: tiny_recommender_dir(d, "sasrec"),
        "rearec": lambda d: tiny_recommender_dir(d, "rearec-erl"),
        "hcn": lambda d: tiny_recommender_dir(d, "hcn"),
        "hllm-user-tower": lambda d: tiny_recommender_dir(d, "hllm"),
    }
    rows = []
    for kind, build in builders.items():
        t = time.perf_counter()
        try:
            onnx = export_model(build(work / f"serve-{kind}"), work / f"serve-{kind}-onnx").output_dir
            if kind in ("cross-encoder", "bi-encoder", "erank"):
                model = Reranker.load(onnx, device="cpu", threads=1, batch_size=4)
                requests = [(queries[i % len(queries)], docs[i % 7:] + docs[: i % 7]) for i in range(cfg.requests)]
                call = lambda r: model.rerank(*r, top_k=5)  # noqa: E731
                api = "Reranker.load"
            else:
                model = Recommender.load(onnx, device="cpu", threads=1)
                requests = [[f"i{(u * 7 + j) % 40 + 1}" for j in range(1 + u % 15)] for u in range(cfg.requests)]
                call = lambda h: model.recommend(h, k=5)  # noqa: E731
                api = "Recommender.load"
            sequential = [call(r) for r in requests]
            with ThreadPoolExecutor(max_workers=cfg.threads) as pool:
                concurrent = list(pool.map(call, requests))
            same = concurrent == sequential
            observed = f"{cfg.requests} requests from {cfg.threads} threads {'equal' if same else 'DIFFER from'} the sequential results"
        except Exception as err:  # a failed export or load is this probe's observation, not the benchmark's end
            same, api, observed = False, "load", f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        rows.append(row(f"8-thread serving: {kind}", f"{api} (ONNX export)", "results from 8 threads equal the sequential results",
                        observed, same, time.perf_counter() - t))
    return rows


# -- 6. disk full ------------------------------------------------------------------------------------------
def disk_full_inprocess_row(job: dict[str, Path], ce: Path, work: Path, cfg: BenchConfig) -> dict:
    """The chunk writer raises ENOSPC at chunk k; then the job resumes with the writer restored."""
    import functools

    import rankwise.serving.batch as batch
    from rankwise.serving.api import Reranker

    t = time.perf_counter()
    fail_at = int(np.random.default_rng(cfg.seed + 6).integers(1, 4))
    factory = functools.partial(Reranker.load, ce, device="cpu", threads=1, batch_size=8)
    common = dict(top_k=None, chunk_queries=cfg.chunk_queries)
    clean_out = work / "inproc-clean.trec"
    batch.run_batch_rerank(batch.BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], clean_out, **common), factory, "ce")
    out = work / "inproc-full.trec"
    writer = batch._write_chunk

    def full_disk(frame, path: Path) -> None:  # noqa: ANN001 - a polars DataFrame
        if path.name == f"chunk-{fail_at:05d}.parquet":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        writer(frame, path)

    batch._write_chunk = full_disk
    try:
        batch.run_batch_rerank(batch.BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], out, **common), factory, "ce")
        error = None
    except Exception as err:  # the probe records what was raised
        error = err
    finally:
        batch._write_chunk = writer
    parts = out.with_name(out.name + ".parts")
    try:
        recorded = sorted(int(k) for k in json.loads((parts / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError) as err:
        recorded = [f"unreadable manifest: {err}"]
    leftovers = sorted(p.name for p in parts.iterdir() if not p.name.startswith("chunk-") and p.name != "manifest.json") if parts.is_dir() else []
    clean_error = isinstance(error, OSError) and error.errno == errno.ENOSPC and "\n" not in str(error)
    result = batch.run_batch_rerank(batch.BatchRerankConfig(job["candidates"], job["queries"], job["corpus"], out, resume=True, **common),
                                    factory, "ce")
    same = out.read_bytes() == clean_out.read_bytes()
    ok = clean_error and recorded == list(range(fail_at)) and not leftovers and same
    observed = (f"{type(error).__name__ if error else 'no error'} at chunk {fail_at}: {str(error)[:200]}; manifest records chunks {recorded}"
                f"{'; temp files left: ' + ', '.join(leftovers) if leftovers else ''}; resume reused {result.chunks_reused}/{result.chunks}, "
                f"output {'byte-identical' if same else 'DIFFERS'}")
    return row("disk full (simulated ENOSPC in the chunk writer)", "run_batch_rerank, then resume=True",
               "one-line OSError(ENOSPC); manifest lists only the chunks written; no temp files; resume gives the byte-identical output",
               observed, ok, time.perf_counter() - t)


def fill(folder: Path) -> Path:
    """Write ``folder/filler`` until the file system is full."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def disk_full_cli_row(job: dict[str, Path], model: Path, work: Path, cfg: BenchConfig, env: dict[str, str], clean: bytes) -> dict | None:
    """``--output`` on a 4 MiB tmpfs that is filled up after chunk k; then space is freed and the job resumed."""
    mount = work / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        return None
    t = time.perf_counter()
    try:
        out = mount / "out.trec"
        parts = out.with_name(out.name + ".parts")
        fill_after = int(np.random.default_rng(cfg.seed + 7).integers(1, 4))
        log = work / "tmpfs-run.log"
        proc = start(rerank_args(job, model, out, cfg), env, log)
        while chunks_done(parts) < fill_after and proc.poll() is None:
            time.sleep(0.02)
        filler = fill(mount)
        done = finish(proc, log, cfg.timeout_s)
        lines = stderr_lines(done.stderr)
        at = chunks_done(parts)
        clean_error = done.rc == 1 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in done.stderr
        absent = not out.exists()
        filler.unlink()
        resumed = cli(rerank_args(job, model, out, cfg, "--resume"), env, cfg.timeout_s)
        same = out.is_file() and out.read_bytes() == clean
        summary = last_json(resumed.stdout)
        ok = clean_error and absent and resumed.rc == 0 and same
        observed = (f"filled after {fill_after} chunks: exit {done.rc}, {len(lines)} line(s): {(lines[-1] if lines else '')[:140]}; "
                    f"{at} chunks recorded, output {'absent' if absent else 'PRESENT'}; space freed, resume exit {resumed.rc}, "
                    f"reused {summary.get('chunks_reused', '?')}/{summary.get('chunks', '?')}, "
                    f"output {'byte-identical' if same else 'DIFFERS'}")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    return row("disk full (4 MiB tmpfs filled during the job)", "rerank, then rerank --resume",
               "exit 1 with one line, no traceback, no output; --resume after freeing space gives the byte-identical output",
               observed, ok, time.perf_counter() - t)


# -- the run ------------------------------------------------------------------------------------------------
def run(cfg: BenchConfig) -> list[dict]:
    """Every probe; one flat row each."""
    rng = np.random.default_rng(cfg.seed)
    marker = uuid.uuid4().hex
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rwrel-") as tmp:
        work = Path(tmp)
        env = probe_env(marker)
        job = write_rerank_job(work / "job", cfg)
        ce = tiny_cross_encoder_dir(work / "ce", max_length=64, initializer_range=0.2)
        sasrec = tiny_recommender_dir(work / "sasrec", "sasrec")

        t = time.perf_counter()
        if "bad" in cfg.groups:
            rows += bad_input_rows(bad_input_cases(work, job, ce, sasrec), env, cfg)
        print(f"bad inputs: {len(rows)} probes in {time.perf_counter() - t:.0f}s", flush=True)

        clean_out = work / "clean.trec"
        done = cli(rerank_args(job, ce, clean_out, cfg), env, cfg.timeout_s)
        if done.rc != 0:
            raise RuntimeError(f"the uninterrupted rerank failed: {done.stderr[-2000:]}")
        clean = clean_out.read_bytes()
        summary = last_json(done.stdout)
        n_chunks = int(summary["chunks"])
        chunk_s = float(summary["seconds"]) / n_chunks
        print(f"clean rerank: {n_chunks} chunks in {summary['seconds']}s (process {done.seconds:.1f}s)", flush=True)

        t = time.perf_counter()
        for j, point in enumerate(kill_points(rng, n_chunks, cfg.local_kills if "kill" in cfg.groups else 0, chunk_s)):
            rows.append(kill_resume_row(f"kill -9 + resume #{j + 1}", "rerank --engine local", job, ce, work, cfg, env, clean,
                                        [point], [], marker))
        print(f"local kills: {time.perf_counter() - t:.0f}s", flush=True)

        if cfg.ray and "ray" in cfg.groups:
            t = time.perf_counter()
            ray_tmp = Path(tempfile.mkdtemp(prefix="rwray-", dir="/tmp"))
            try:
                for j, point in enumerate(kill_points(rng, n_chunks, cfg.ray_kills, chunk_s, span=0.5)):
                    rows.append(kill_resume_row(f"kill -9 + resume under Ray #{j + 1}", "rerank --engine ray --workers 2", job, ce,
                                                work, cfg, probe_env(marker, ray_tmp), clean, [point],
                                                ["--engine", "ray", "--workers", "2"], marker, ray_tmp))
            finally:
                reap(marker, ray_tmp, grace_s=0)
                shutil.rmtree(ray_tmp, ignore_errors=True)
            print(f"ray kills: {time.perf_counter() - t:.0f}s", flush=True)

        t = time.perf_counter()
        if "concurrent" in cfg.groups:
            rows += concurrent_rows(job, ce, work, cfg, env, clean)
        print(f"concurrent: {time.perf_counter() - t:.0f}s", flush=True)

        t = time.perf_counter()
        if "disk" in cfg.groups:
            rows.append(disk_full_inprocess_row(job, ce, work, cfg))
        if cfg.tmpfs and "disk" in cfg.groups:
            cli_row = disk_full_cli_row(job, ce, work, cfg, env, clean)
            if cli_row is None:
                print("disk full through the CLI: skipped (mounting a tmpfs needs root)", flush=True)
            else:
                rows.append(cli_row)
        print(f"disk full: {time.perf_counter() - t:.0f}s", flush=True)

        t = time.perf_counter()
        if "serving" in cfg.groups:
            rows += serving_rows(work, ce, cfg)
        print(f"serving: {time.perf_counter() - t:.0f}s", flush=True)
        left = reap(marker, grace_s=0)[2]
        if left:
            print(f"killed {left} leftover probe processes", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=BenchConfig.seed, help="seed of the data, the models and the kill points")
    parser.add_argument("--no-ray", action="store_true", help="skip the kill -9 probes under --engine ray")
    parser.add_argument("--no-tmpfs", action="store_true", help="skip the disk-full probe through the CLI on a tmpfs")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated probe groups ({', '.join(GROUPS)})")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go")
    args = parser.parse_args()
    cfg = BenchConfig(seed=args.seed, ray=not args.no_ray, tmpfs=not args.no_tmpfs, groups=tuple(args.only.split(",")))
    import torch

    threads = torch.get_num_threads()  # the in-process probes load models with one thread; the file records the machine's
    t = time.perf_counter()
    rows = run(cfg)
    total = time.perf_counter() - t
    torch.set_num_threads(threads)
    print_table(rows, f"reliability — {PROTOCOL}")
    passed = sum(r["pass"] for r in rows)
    print(f"{passed}/{len(rows)} probes pass in {total:.0f}s")
    write_results("reliability", rows, PROTOCOL, results_dir=args.results_dir, config=asdict(cfg), seed=cfg.seed,
                  passed=passed, probes=len(rows), total_s=round(total, 1))
    plot_bars(rows, ["probe", "pass"], "seconds", args.results_dir / "reliability.png",
              title=f"reliability: {passed}/{len(rows)} probes pass (bar: seconds)")


if __name__ == "__main__":
    main()
