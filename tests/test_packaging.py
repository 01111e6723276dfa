"""The wheel installs one package, ``rankwise``, and nothing generic (``eval``, ``train``, ``cli``)
into site-packages; every package directory of the repository is listed in ``pyproject.toml``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"rankwise"} | {
        "rankwise." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("core", "rankers", "recsys", "train", "eval", "serving")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed


def test_wheel_holds_only_rankwise(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build leaves no build/ folder in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rankwise-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"rankwise", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "rankwise/cli.py" in names and "rankwise/rankers/fusion.py" in names
    assert not any(n.startswith(("rankwise/tests/", "rankwise/benchmarks/")) for n in names)
    # installed into a scratch venv (no dependencies: the facade imports lazily)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    probe = ("import importlib.util, rankwise; print(rankwise.__file__); "
             "print([m for m in ('eval', 'train', 'cli', 'rankers', 'serving', 'recsys') if importlib.util.find_spec(m)])")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(site) in out.splitlines()[0]
    assert out.splitlines()[1] == "[]"


def test_facade_exports_resolve() -> None:
    import rankwise

    for name in rankwise.__all__:
        assert getattr(rankwise, name) is not None
