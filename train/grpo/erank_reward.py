"""ERank RL rewards for TRL's ``GRPOTrainer``: a listwise-derived score reward and a format reward.

Both follow TRL's reward convention ``f(prompts, completions, **columns) -> list[float | None]``;
dataset columns named ``qid`` and ``label`` reach :func:`erank_list_reward` as keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rankwise.rankers.erank import parse_score
from rankwise.train.grpo._completions import completion_text

__all__ = ["erank_list_reward", "erank_format_reward"]

_BARE = re.compile(r"\s*(10|\d)\s*")
_TAGGED = re.compile(r"score\s*:\s*(10|\d)\s*\.?\s*$", re.IGNORECASE | re.DOTALL)


def erank_list_reward(
    prompts: Sequence[Any], completions: Sequence[Any], qid: Sequence[str], label: Sequence[float], **kwargs: Any
) -> list[float]:
    """Reward each sampled score by how it places its document among the query's other documents.

    Formula (ours; the paper gives no formula): completion i of document d_i with target label
    y_i ∈ [0, 10] and parsed score s_i. Its peers P_i are the completions j in the same batch with
    qid_j = qid_i, d_j ≠ d_i (prompt differs), y_j ≠ y_i and a parsable s_j. Then
        r_i = mean_{j ∈ P_i} c_ij,  c_ij = 1 if (s_i − s_j)(y_i − y_j) > 0, 0.5 if s_i = s_j, else 0
    (the fraction of correctly ordered pairs the completion forms with the other documents' samples),
    and, when P_i is empty, the pointwise fallback r_i = 1 − |s_i − y_i| / 10. Unparsable → 0.
    Lay a query's documents out contiguously and make ``generation_batch_size`` a multiple of
    (documents per query × ``num_generations``) with ``shuffle_dataset=False``, so that a query's
    documents are scored in one group.

    Example:
        >>> erank_list_reward(["a", "a", "b", "b"], ["9", "2", "3", "x"], qid=["q"] * 4, label=[10, 10, 0, 0])
        [1.0, 0.0, 0.5, 0.0]
        >>> erank_list_reward(["a"], ["7"], qid=["q"], label=[10])
        [0.7]
    """
    scores = [parse_score(completion_text(c)) for c in completions]
    keys = [str(p) for p in prompts]
    rewards = []
    for i, s_i in enumerate(scores):
        if s_i is None:
            rewards.append(0.0)
            continue
        pairs = [
            1.0 if (s_i - s_j) * (label[i] - label[j]) > 0 else 0.5 if s_i == s_j else 0.0
            for j, s_j in enumerate(scores)
            if j != i and s_j is not None and qid[j] == qid[i] and keys[j] != keys[i] and label[j] != label[i]
        ]
        rewards.append(sum(pairs) / len(pairs) if pairs else round(1.0 - abs(s_i - float(label[i])) / 10.0, 6))
    return rewards


def erank_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 when the completion is a bare integer 0–10 or ends with "Score: N" (reasoning mode), else 0.

    Example:
        >>> erank_format_reward(["p"] * 4, ["7", " 10 ", "Fits well. Score: 8", "seven"])
        [1.0, 1.0, 1.0, 0.0]
    """
    out = []
    for c in completions:
        text = completion_text(c)
        out.append(1.0 if _BARE.fullmatch(text) or _TAGGED.search(text) else 0.0)
    return out
