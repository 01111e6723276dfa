"""Benchmark results: the one JSON format of ``DESIGN.md``, a printed table and a PNG plot."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

__all__ = ["machine_info", "time_calls", "print_table", "write_results", "plot_bars", "plot_lines", "plot_scatter"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def machine_info(device: str = "cpu") -> dict[str, str | int]:
    """CPU model, thread count and device, recorded in every result file."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "threads": torch.get_num_threads(), "device": device}


def time_calls(call: Callable[[Any], object], inputs: Sequence[Any], warmup: int = 5) -> list[float]:
    """Wall seconds of ``call(x)`` for each of ``inputs``, after ``call`` on the first ``warmup`` of them."""
    for x in inputs[:warmup]:
        call(x)
    seconds = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        seconds.append(time.perf_counter() - start)
    return seconds


def print_table(rows: Sequence[dict], title: str) -> None:
    """Print ``rows`` (flat dicts) as a rich table; floats get 4 decimals."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def write_results(
    benchmark: str,
    rows: Sequence[dict],
    protocol: str,
    results_dir: Path | None = None,
    device: str = "cpu",
    **extra: object,
) -> Path:
    """Write ``<results_dir>/<benchmark>.json`` atomically; rows must be flat records."""
    for r in rows:
        bad = [k for k, v in r.items() if isinstance(v, (dict, list, tuple))]
        if bad:
            raise ValueError(f"write_results({benchmark}): row fields {bad} are not flat values")
    from importlib.metadata import PackageNotFoundError, version

    try:
        rw_version = version("rankwise")
    except PackageNotFoundError:
        rw_version = "unknown"
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": benchmark,
        "protocol": protocol,
        "machine": machine_info(device),
        "rankwise_version": rw_version,
        "date": _dt.date.today().isoformat(),
        **extra,
        "rows": list(rows),
    }
    path = out_dir / f"{benchmark}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def merge_results(
    benchmark: str,
    new_rows: Sequence[dict],
    key: Callable[[dict], Hashable],
    protocol: str,
    results_dir: Path | None = None,
    sort: Callable[[dict], Any] | None = None,
    **extra: object,
) -> list[dict]:
    """Merge ``new_rows`` into ``<results_dir>/<benchmark>.json`` by ``key`` and return all rows.

    Safe against two writers: under an exclusive lock on ``<benchmark>.json.lock`` the file is read
    again, rows with a new row's key are replaced, the others kept (whoever wrote them), and the
    result is written atomically by :func:`write_results`.
    """
    import fcntl

    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{benchmark}.json"
    with open(out_dir / f"{benchmark}.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text())["rows"] if path.is_file() else []
        fresh = {key(r) for r in new_rows}
        rows = [r for r in rows if key(r) not in fresh] + list(new_rows)
        if sort is not None:
            rows.sort(key=sort)
        write_results(benchmark, rows, protocol, results_dir=out_dir, **extra)
    return rows


def plot_bars(
    rows: Sequence[dict], label: str | Sequence[str], metric: str, path: Path, title: str = "",
    mean_over: str | None = None,
) -> Path:
    """Horizontal bar chart of ``metric`` per row, labelled by one or more identifying fields
    (numbers as ``field=value``: a bare 42 or 0.2 does not say what it is). ``mean_over`` (e.g.
    ``"seed"``): rows whose labels differ only in that field become one bar, their mean, with the
    standard deviation as an error bar and the count in the label. Equal labels keep a bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ([label] if isinstance(label, str) else list(label)) if k != mean_over]
    bars: dict[str, list[float]] = {}
    for i, r in enumerate(rows):
        name = " / ".join(f"{k}={r[k]}" if isinstance(r[k], (int, float)) else str(r[k]) for k in keys if k in r)
        bars.setdefault(name if mean_over else f"{name}\0{i}", []).append(float(r.get(metric, float("nan"))))
    names = [n.split("\0")[0] + (f" ({len(v)} {mean_over}s)" if mean_over and len(v) > 1 else "") for n, v in bars.items()]
    values = [float(np.mean(v)) for v in bars.values()]
    spread = [float(np.std(v)) if len(v) > 1 else 0.0 for v in bars.values()]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), values, xerr=spread if mean_over else None, capsize=3)
    ax.set_yticks(range(len(names)), names)  # positions, not categories: equal names stay separate bars
    for y, (v, e) in enumerate(zip(values, spread)):
        ax.text(v + e, y, f" {v:.4f}" + (f" ± {e:.4f}" if e else ""), va="center", fontsize=8)
    finite = [v + e for v, e in zip(values, spread) if np.isfinite(v + e)]
    if finite and max(finite) > 0:
        ax.set_xlim(0, 1.3 * max(finite))  # room for the value labels
    ax.invert_yaxis()
    return _save(fig, ax, path, metric, None, title)


def plot_lines(rows: Sequence[dict], x: str, y: str, group: str | Sequence[str], path: Path, title: str = "") -> Path:
    """One line of ``y`` against ``x`` per distinct value of ``group`` (e.g. dev curves per objective)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [group] if isinstance(group, str) else list(group)
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        lines.setdefault(" / ".join(str(r.get(k)) for k in keys), []).append((float(r[x]), float(r[y])))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.legend(fontsize=8)
    return _save(fig, ax, path, x, y, title)


def plot_scatter(
    rows: Sequence[dict],
    x: str,
    y: str,
    path: Path,
    label: str = "engine",
    group: str | None = None,
    hollow: str | None = None,
    vlines: Sequence[tuple[float, str]] = (),
    title: str = "",
) -> Path:
    """One point per row at (``x``, ``y``), annotated with its ``label`` field; rows with another value of
    ``group`` get another marker and colour (legend), rows whose ``hollow`` field is true an unfilled
    marker (its legend entry names that field); ``vlines`` are ``(x, legend text)`` dashed vertical
    reference lines (e.g. a budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^vP*X<>"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups: dict[str, int] = {}
    shown: set[tuple[str, bool]] = set()
    for r in rows:
        g = str(r.get(group, "")) if group else ""
        k = groups.setdefault(g, len(groups))
        colour = f"C{k % 10}"
        empty = bool(hollow and r.get(hollow))
        text = None
        if (g, empty) not in shown and (group or empty):
            shown.add((g, empty))
            text = ", ".join(t for t in (g, f"{hollow} (hollow)" if empty else "") if t)
        ax.scatter([float(r[x])], [float(r[y])], marker=markers[k % len(markers)], s=45, edgecolors=colour,
                   facecolors="none" if empty else colour, label=text)
        ax.annotate(str(r.get(label, "")), (float(r[x]), float(r[y])), textcoords="offset points", xytext=(4, 3), fontsize=7)
    for value, text in vlines:
        ax.axvline(float(value), color="0.4", linestyle="--", linewidth=1, label=text)
    if shown or vlines:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, x, y, title)


def _save(fig, ax, path: Path, xlabel: str, ylabel: str | None, title: str) -> Path:  # noqa: ANN001 - matplotlib objects
    """Label, lay out and write a figure as PNG (folders made), then close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
