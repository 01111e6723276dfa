"""Benchmarks hold no library logic that other files need: no benchmark imports another."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_imports_another():
    names = {p.stem for p in BENCH.glob("*.py")}
    found = []
    for path in BENCH.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            found += [(path.name, m) for m in mods if m and m.split(".")[0] in names]
    assert found == []
