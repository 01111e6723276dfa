"""Every Python example of the README runs as written (model directories are tiny stand-ins with
the README's names; the BEIR example reads the real SciFact data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests._serving_models import tiny_cross_encoder_dir, tiny_sasrec_dir

ROOT = Path(__file__).resolve().parents[1]


def _examples() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.+?)\n```", section, flags=re.S)


@pytest.fixture()
def runs(tmp_path, monkeypatch, data_dir):
    from rankwise.serving.export import export_model

    monkeypatch.chdir(tmp_path)
    tiny_cross_encoder_dir(tmp_path / "runs" / "ce-minilm")
    export_model(tmp_path / "runs" / "ce-minilm", tmp_path / "runs" / "ce-minilm-onnx")
    tiny_sasrec_dir(tmp_path / "runs" / "sasrec-ml100k")
    return tmp_path


def test_readme_has_the_three_examples():
    blocks = _examples()
    assert len(blocks) == 3 and "Reranker.load" in blocks[0] and "Recommender.load" in blocks[1] and "load_beir" in blocks[2]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_example_runs(runs, index, capsys):
    code = _examples()[index]
    exec(compile(code, f"README.md example {index + 1}", "exec"), {})
    assert capsys.readouterr().out.strip()
    if index == 0:  # the same example on the ONNX export
        exec(compile(code.replace('"runs/ce-minilm"', '"runs/ce-minilm-onnx"'), "README.md example 1 (onnx)", "exec"), {})
        assert capsys.readouterr().out.strip()
