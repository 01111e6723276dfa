"""The package's import arrows, read from the source: the ground floor (``core``) imports nothing
else of rankwise, and ``rankers`` imports nothing from ``eval`` (rankers sit below evaluation)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module if node.level == 0 else f"<relative>{node.module}")
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("core", ("rankwise.", "<relative>")),
    ("rankers", ("rankwise.eval", "rankwise.train", "rankwise.serving", "rankwise.recsys")),
])
def test_import_arrows(package, forbidden):
    own = f"rankwise.{package}"
    bad = {f: sorted(n for n in names if n.startswith(forbidden) and not n.startswith(own)) for f, names in _imports(package).items()}
    assert {f: n for f, n in bad.items() if n} == {}
