"""Generalisation subsets of a test split whose corpus is shared with the train split.

SciFact (like several BEIR sets) uses one corpus for train and test, so a reranker can learn a
document prior ("this abstract is cited by some train claim"). Splitting the test queries by whether
any relevant document of theirs is also a train positive separates that prior from ranking skill.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["positive_overlap_subsets", "SEEN", "UNSEEN"]

SEEN = "positives-seen-in-train"
UNSEEN = "positives-unseen-in-train"


def positive_overlap_subsets(
    train_qrels: Mapping[str, Mapping[str, int]], test_qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, dict[str, int]]]:
    """Test qrels split by whether a relevant document of the query is also a train positive.

    Example:
        >>> positive_overlap_subsets({"t": {"d1": 1}}, {"a": {"d1": 1}, "b": {"d2": 1}})
        {'positives-seen-in-train': {'a': {'d1': 1}}, 'positives-unseen-in-train': {'b': {'d2': 1}}}
    """
    seen_docs = {d for rel in train_qrels.values() for d, g in rel.items() if g > 0}
    subsets: dict[str, dict[str, dict[str, int]]] = {SEEN: {}, UNSEEN: {}}
    for q, rel in test_qrels.items():
        seen = any(d in seen_docs for d, g in rel.items() if g > 0)
        subsets[SEEN if seen else UNSEEN][q] = dict(rel)
    return subsets
