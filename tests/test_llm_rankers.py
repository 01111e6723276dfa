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
