"""IRanker RL on TRL's ``GRPOTrainer``: elimination states as prompts, a step reward and a format reward.

Every elimination state (a query and its remaining pool) is an independent RL sample; TRL samples
``num_generations`` answers per state. Dataset rows carry ``prompt`` (the IRanker prompt) and
``labels`` (the pool's labels in prompt order), which reach the rewards as keyword arguments.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from rankwise.rankers.iranker import iranker_prompt, parse_elimination
from rankwise.train.grpo._completions import completion_text

__all__ = ["iranker_step_reward", "iranker_format_reward", "iranker_states"]

_ANSWER = re.compile(r"\s*\[?[A-Za-z]\]?\s*")


def iranker_step_reward(prompts: Sequence[Any], completions: Sequence[Any], labels: Sequence[Sequence[float]], **kwargs: Any) -> list[float]:
    """+1 if the eliminated candidate has the lowest label of its pool, 0 if not, −0.5 if none is named.

    Formula: c = parse(completion); r = −0.5 if c is None; 1 if labels[c] = min(labels); else 0.
    With binary labels this is the paper's "+1 unless the eliminated item is (one of) the best".

    Example:
        >>> iranker_step_reward(["p"] * 3, ["[C]", "[A]", "none"], labels=[[1, 2, 0]] * 3)
        [1.0, 0.0, -0.5]
    """
    out = []
    for c, labs in zip(completions, labels):
        index = parse_elimination(completion_text(c), len(labs))
        out.append(-0.5 if index is None else 1.0 if labs[index] == min(labs) else 0.0)
    return out


def iranker_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """0 when the completion is one identifier (``[C]`` or ``C``), −1 otherwise.

    Paper difference: the authors reward a think/answer tag layout (−1 wrong layout, −0.25 per tag not
    present exactly once); our prompt asks for the identifier only, so the layout is that.

    Example:
        >>> iranker_format_reward(["p"] * 3, ["[B]", " c", "B because"])
        [0.0, 0.0, -1.0]
    """
    return [0.0 if _ANSWER.fullmatch(completion_text(c)) else -1.0 for c in completions]


def iranker_states(
    tokenizer: PreTrainedTokenizerBase,
    query: str,
    docs: Sequence[str],
    labels: Sequence[float],
    rng: random.Random,
    shuffle: bool = True,
) -> list[dict]:
    """The N−1 elimination states along the oracle trajectory of one list, as GRPO dataset rows.

    State t is the list with the t lowest-labelled documents removed (ties broken at random), in a
    random order when ``shuffle`` (so the policy cannot learn positions).

    Example:
        >>> from rankwise.rankers.llm import tiny_causal_lm
        >>> _, tok = tiny_causal_lm(["a b c"], vocab_size=270)
        >>> rows = iranker_states(tok, "q", ["x", "y", "z"], [2, 0, 1], random.Random(0))
        >>> [sorted(r["labels"]) for r in rows]
        [[0, 1, 2], [1, 2]]
    """
    order = sorted(range(len(docs)), key=lambda i: (labels[i], rng.random()))  # worst first
    rows = []
    for t in range(len(docs) - 1):
        pool = order[t:]
        if shuffle:
            pool = rng.sample(pool, len(pool))
        rows.append({
            "prompt": iranker_prompt(tokenizer, query, [docs[i] for i in pool]),
            "labels": [labels[i] for i in pool],
        })
    return rows
