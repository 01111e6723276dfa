"""LLM rankers on a tiny random causal LM: parsing, elimination order, score readout, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _tiny_llm import one_thread, tiny

from rankwise.rankers import load_ranker
from rankwise.rankers.erank import ERankRanker, expected_score, parse_score
from rankwise.rankers.iranker import IRanker, elimination_to_order, parse_elimination
from rankwise.rankers.listwise import ListwiseRanker, parse_permutation, sliding_windows
from rankwise.rankers.llm import PACKAGED_GGUF, gguf_path, next_token_logprobs, single_token_id


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def lm():
    return tiny()


def test_parse_permutation_drops_repeats_and_appends_missing_in_input_order():
    assert parse_permutation("[4] > [2] > [4] > [7] > [0]", 5) == [3, 1, 0, 2, 4]
    assert parse_permutation("", 3) == [0, 1, 2]
    assert parse_permutation("2 1", 2) == [1, 0]


def test_sliding_windows_go_back_to_front_and_cover_everything():
    spans = sliding_windows(20, 8, 4)
    assert spans[0] == (12, 20) and spans[-1][0] == 0
    assert set().union(*[range(a, b) for a, b in spans]) == set(range(20))
    with pytest.raises(ValueError):
        sliding_windows(5, 0, 1)


def test_elimination_order_reverses_eliminations_with_survivor_first():
    assert elimination_to_order([1, 3, 0], 4) == [2, 0, 3, 1]
    assert parse_elimination("[B]", 3) == 1
    assert parse_elimination("z", 3) == 2  # out of the pool: closest id
    assert parse_elimination("12", 3) is None


def test_parse_score_reads_integer_or_tagged_score():
    assert parse_score("10") == 10 and parse_score("3") == 3
    assert parse_score("reasons... Score: 8") == 8
    assert parse_score("Score: 42") is None and parse_score("nothing") is None


def test_expected_score_is_exact_on_point_masses_and_reads_ten():
    first = torch.full((3, 10), -1e9)
    first[0, 7] = 0.0  # "7"
    first[1, 1] = 0.0  # "1", then "0" with probability 1 -> 10
    first[2, 1] = 0.0  # "1", then no "0" -> 1
    after = torch.full((3, 10), -1e9)
    after[1, 0] = 0.0
    assert expected_score(first, after).tolist() == pytest.approx([7.0, 10.0, 1.0])
    uniform = torch.full((1, 10), math.log(0.1))
    # p_k = 0.1: (0+2+...+9) * 0.1 + 0.1 * (1 - 0.1) + 10 * 0.1 * 0.1 = 4.4 + 0.09 + 0.1
    assert float(expected_score(uniform, uniform)) == pytest.approx(4.59)


def test_erank_integer_readout_matches_manual_two_position_computation(lm):
    model, tok = lm
    ranker = ERankRanker(model, tok, readout="integer")
    scores = ranker.score("red apple", ["a red apple", "blue sky"])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 10))
    prompt = ranker.prompts("red apple", ["a red apple"])[0]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    digits = [single_token_id(tok, str(k)) for k in range(10)]
    with torch.no_grad():
        logits = model(torch.tensor([ids + [digits[1]]])).logits[0]  # (T, V)
    p = torch.softmax(logits[-2], -1)[digits]
    q = torch.softmax(logits[-1], -1)[digits[0]]
    manual = (sum(k * p[k] for k in range(10)) - p[1] + p[1] * (1 - q) + 10 * p[1] * q) / p.sum()
    assert scores[0] == pytest.approx(float(manual), rel=1e-4)


def test_erank_yes_no_readout_is_a_probability(lm):
    model, tok = lm
    scores = ERankRanker(model, tok, readout="yes_no").score("q", ["a", "b", "c"])
    assert np.all((scores > 0) & (scores < 1))


def test_next_token_logprobs_left_padding_does_not_change_the_readout(lm):
    model, tok = lm
    prompts = ["Query: red apple", "no"]
    batched = next_token_logprobs(model, tok, prompts, batch_size=2)[:, -1]
    single = next_token_logprobs(model, tok, prompts[1:], batch_size=1)[:, -1]
    assert torch.allclose(batched[1], single[0], atol=1e-4)


def test_listwise_ranker_returns_a_permutation_over_windows(lm):
    model, tok = lm
    ranker = ListwiseRanker(model, tok, window=3, stride=2, max_new_tokens=6)
    order = ranker.order("red", ["a", "b", "c", "d", "e"])
    assert sorted(order) == list(range(5))
    hits = ranker.rerank("red", ["a", "b", "c", "d", "e"])
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_iranker_eliminates_n_minus_one_and_batches_like_single_queries(lm):
    model, tok = lm
    ranker = IRanker(model, tok)
    docs = [["red apple", "blue sky", "green", "a red apple"], ["x", "y", "z"]]
    batched = ranker.eliminations(["red apple", "sky"], docs)
    assert [len(e) for e in batched] == [3, 2]
    assert all(len(set(e)) == len(e) for e in batched)
    assert batched[1] == ranker.eliminations(["sky"], [docs[1]])[0]
    scores = ranker.score("sky", docs[1])
    assert sorted(scores.tolist()) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("cls", [ERankRanker, ListwiseRanker, IRanker])
def test_llm_ranker_saves_and_loads_through_load_ranker(lm, cls, tmp_path):
    model, tok = lm
    ranker = cls(model, tok)
    ranker.save_pretrained(tmp_path / "m")
    loaded = load_ranker(tmp_path / "m")
    assert type(loaded) is cls
    if cls is ERankRanker:
        assert loaded.score("q", ["a", "b"]) == pytest.approx(ranker.score("q", ["a", "b"]), rel=1e-5)


def test_gguf_path_names_the_install_command_when_missing(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install"):
        gguf_path("smollm2")
    with pytest.raises(KeyError):
        gguf_path("nope")
    assert set(PACKAGED_GGUF) == {"smollm2", "gemma3-270m"}


# --- issue #19: parse accounting, position bias, digit mass, device/dtype ---------------------------------------


def test_parse_answer_reports_failures_echoes_and_partial_answers():
    from rankwise.rankers.listwise import parse_answer

    failed = parse_answer("I cannot rank these", 3)
    assert failed.failed and not failed.echo and not failed.partial and failed.order == [0, 1, 2]
    echo = parse_answer("[1] > [2] > [3]", 3)
    assert echo.echo and not echo.failed and not echo.partial
    partial = parse_answer("[3] > [9]", 3)
    assert partial.partial and partial.named == 1 and partial.order == [2, 0, 1] and not partial.echo
    real = parse_answer("[2] > [3] > [1]", 3)
    assert not (real.failed or real.echo or real.partial) and real.order == [1, 2, 0]


def test_listwise_ranker_counts_failures_echoes_and_partials_and_logs_each_window(lm, tmp_path, monkeypatch):
    import json

    import polars as pl

    import rankwise.rankers.listwise as listwise

    model, tok = lm
    answers = iter(["no idea", "[1] > [2] > [3]", "[2] > [1]"])
    monkeypatch.setattr(listwise, "generate", lambda *a, **k: [next(answers)])
    log = tmp_path / "gen" / "windows.jsonl"
    ranker = ListwiseRanker(model, tok, window=3, stride=2, log_generations=log)
    candidates = pl.DataFrame({
        "qid": ["q1"] * 5, "docid": [f"d{i}" for i in range(5)], "score": [5.0, 4, 3, 2, 1], "rank": [1, 2, 3, 4, 5],
    })
    ranker.rerank_candidates(candidates, {"q1": "red"}, {f"d{i}": f"doc {i}" for i in range(5)})
    ranker.rerank("red", ["a", "b", "c"])  # one window, answered "[2] > [1]": completed with [3]
    stats = ranker.stats
    assert (stats.calls, stats.parse_failures, stats.echoes, stats.partial) == (3, 1, 1, 1)
    assert stats.rates()["parse_failure_rate"] == pytest.approx(1 / 3)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0] == {"qid": "q1", "candidates": ["d2", "d3", "d4"], "answer": "no idea",
                        "order": ["d2", "d3", "d4"], "failed": True, "partial": False, "echo": False}
    assert lines[1]["candidates"] == ["d0", "d1", "d2"] and lines[1]["echo"]
    assert lines[2]["query"] == "red" and lines[2]["order"] == ["1", "0", "2"] and lines[2]["partial"]
    assert "log_generations" not in ranker._settings()


def test_listwise_ranker_logs_real_generations_of_the_tiny_model(lm, tmp_path):
    import json

    model, tok = lm
    ranker = ListwiseRanker(model, tok, window=4, stride=2, max_new_tokens=4, log_generations=tmp_path / "g.jsonl")
    ranker.rerank("red", ["a", "b", "c"])
    (line,) = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert sorted(line["order"]) == ["0", "1", "2"] and isinstance(line["answer"], str)
    assert ranker.stats.calls == 1 and ranker.stats.parse_failures == int(line["failed"])


def _biased_letter_readout(ranker, bias: str):
    """A stand-in for ``next_token_logprobs``: letter logits = a strong position prior + relevance.

    Irrelevant passages (no "apple") get +2 on their letter; the letter at the biased position gets
    +8 whatever it holds, so a plain argmax names that position's passage as the least relevant.
    """
    import re

    vocab = len(ranker.tokenizer)
    seen: list[str] = []

    def fake(model, tokenizer, prompts, keep=1, batch_size=8, append_ids=()):
        seen.extend(prompts)
        out = torch.full((len(prompts), keep, vocab), -30.0)
        for row, prompt in enumerate(prompts):
            passages = re.findall(r"^\[[A-Z]\] (.*)$", prompt, flags=re.M)
            for j, text in enumerate(passages):
                prior = 8.0 if j == (0 if bias == "first" else len(passages) - 1) else 0.0
                out[row, -1, ranker._ids[j]] = prior + (0.0 if "apple" in text else 2.0)
        return torch.log_softmax(out, dim=-1)

    return fake, seen


@pytest.mark.parametrize("bias", ["first", "last"])
@pytest.mark.parametrize("position", range(5))
def test_iranker_ranks_the_relevant_passage_first_at_every_position_despite_a_letter_prior(lm, monkeypatch, bias, position):
    import rankwise.rankers.iranker as iranker

    model, tok = lm
    ranker = IRanker(model, tok)
    fake, _ = _biased_letter_readout(ranker, bias)
    monkeypatch.setattr(iranker, "next_token_logprobs", fake)
    docs = [f"junk passage {i}" for i in range(4)]
    docs.insert(position, "a red apple")
    hits = ranker.rerank("red apple", docs)
    assert hits[0].docid == str(position)


def test_iranker_shuffles_each_pool_deterministically_per_query_and_averages_permutations(lm, monkeypatch):
    import rankwise.rankers.iranker as iranker

    model, tok = lm
    docs = [f"passage {c}" for c in "vwxyz"]
    ranker = IRanker(model, tok, permutations=3, calibrate=False)
    fake, seen = _biased_letter_readout(ranker, "first")
    monkeypatch.setattr(iranker, "next_token_logprobs", fake)
    first = ranker.eliminations(["q"], [docs])
    n_prompts = len(seen)
    assert n_prompts == 3 * 4  # P orderings per step, N - 1 steps, no calibration prompts
    assert first == ranker.eliminations(["q"], [docs])  # same query, same shuffles
    assert seen[:n_prompts] == seen[n_prompts:]
    orders = [sorted(docs, key=p.index) for p in seen[:3]]
    assert orders[1] == orders[0][::-1] and sorted(orders[2]) == sorted(docs)  # a shuffle, its reverse, a new one
    with pytest.raises(ValueError, match="permutations"):
        IRanker(model, tok, permutations=0)


def test_erank_digit_mass_is_the_full_vocabulary_probability_of_the_digits(lm):
    model, tok = lm
    ranker = ERankRanker(model, tok, readout="integer")
    docs = ["a red apple", "blue sky", "green"]
    out = ranker.score_readout("red apple", docs)
    digits = [single_token_id(tok, str(k)) for k in range(10)]
    manual = []
    for prompt in ranker.prompts("red apple", docs):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]  # (V,)
        manual.append(float(torch.softmax(logits.double(), -1)[digits].sum()))
    assert out.digit_mass.shape == (3,) and np.all((out.digit_mass >= 0) & (out.digit_mass <= 1))
    assert out.digit_mass == pytest.approx(manual, rel=1e-4)
    assert out.scores == pytest.approx(ranker.score("red apple", docs), rel=1e-5)
    assert ranker.stats.pairs == 6 and ranker.stats.digit_pairs == 6
    assert ranker.stats.mean_digit_mass == pytest.approx(float(np.mean(manual)), rel=1e-4)
    yes_no = ERankRanker(model, tok, readout="yes_no")
    assert yes_no.score_readout("q", ["a"]).digit_mass is None and math.isnan(yes_no.stats.mean_digit_mass)


def test_resolve_device_and_dtype_accept_the_names_and_reject_bad_values_in_one_line(monkeypatch):
    from rankwise.core.device import resolve_device, resolve_dtype

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert [resolve_dtype(n) for n in ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")] == [
        torch.float32, torch.float32, torch.bfloat16, torch.bfloat16, torch.float16, torch.float16,
    ]
    with pytest.raises(ValueError, match="'tpu7'"):
        resolve_device("tpu7")
    with pytest.raises(ValueError, match="'int8'"):
        resolve_dtype("int8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_bf16_native_follows_onednn_on_the_cpu_and_cuda_support_on_a_gpu(monkeypatch):
    from rankwise.core.device import bf16_native

    assert bf16_native("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # an AVX2-only CPU
    assert bf16_native("cpu") is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # AVX-512 BF16 / AMX
    assert bf16_native("cpu") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a pre-Ampere GPU
    assert bf16_native("cuda") is False


@pytest.mark.parametrize("cls", [ERankRanker, ListwiseRanker, IRanker])
def test_llm_ranker_from_pretrained_puts_the_model_on_the_device_in_the_dtype(lm, cls, tmp_path):
    model, tok = lm
    cls(model, tok).save_pretrained(tmp_path / "m")
    loaded = cls.from_pretrained(tmp_path / "m", device="cpu", dtype="bf16")
    assert loaded.model.dtype == torch.bfloat16 and loaded.device == torch.device("cpu")
    auto = load_ranker(tmp_path / "m", device="auto", dtype="fp32")
    assert auto.model.dtype == torch.float32 and auto.device == _auto_device()
    if cls is ERankRanker:
        assert np.all(np.isfinite(loaded.score("q", ["a", "b"])))
    moved = cls(auto.model, tok, dtype="fp16", device="cpu")
    assert moved.model.dtype == torch.float16
    with pytest.raises(ValueError, match="fp64"):
        cls.from_pretrained(tmp_path / "m", dtype="fp64")


def _auto_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_materialize_takes_a_gguf_file_path(tmp_path):
    """A .gguf path (e.g. a stand-in joined from parts) materialises like a packaged name."""
    from rankwise.rankers.llm import load_causal_lm, materialize

    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        materialize(tmp_path / "missing.gguf", tmp_path / "never")
    with pytest.raises(FileNotFoundError, match="no such model directory"):  # not huggingface_hub's "Repo id must be..."
        load_causal_lm(tmp_path / "missing-model")
    out = materialize(gguf_path("smollm2"), tmp_path / "smollm2")
    model, tok = load_causal_lm(out)
    assert model.config.model_type == "llama" and tok.chat_template
    logp = next_token_logprobs(model, tok, ["Is the sky blue? Answer yes or no."], keep=1)
    assert logp.shape == (1, 1, model.config.vocab_size) and torch.isfinite(logp).all()
