"""docs/results.md and the README's results block are current with benchmarks/results/*.json."""

from __future__ import annotations

from pathlib import Path

from rankwise.eval.results_md import update

ROOT = Path(__file__).resolve().parents[1]


def test_rendered_results_are_current():
    stale = update(ROOT, check=True)
    assert stale == [], f"run: python -m rankwise.eval.results_md (stale: {[str(p) for p in stale]})"
