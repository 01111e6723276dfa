"""Cross-check against sentence-transformers 6's cross-encoder losses where definitions match.

sentence-transformers computes its losses inside ``forward(inputs, labels)`` from a model; a stub
model returns fixed scores for the (query, doc) pairs, so the same tensors reach both sides.
"""

import pytest
import torch

from rankwise.train.losses import LambdaLoss, ListNetLoss, RankNetLoss

st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")


class _StubModel(torch.nn.Module):
    """Looks like a one-label CrossEncoder whose score for pair ``n`` is ``flat_scores[n]``."""

    num_labels = 1

    def __init__(self, flat_scores: torch.Tensor) -> None:
        super().__init__()
        self.flat = flat_scores
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen = 0

    @property
    def device(self):
        return torch.device("cpu")

    def preprocess(self, pairs, prompt=None, task=None):
        idx = torch.arange(self.seen, self.seen + len(pairs))
        self.seen += len(pairs)
        return {"idx": idx}

    def forward(self, tokens):
        return {"scores": self.flat[tokens["idx"]]}


def _st_value(loss_cls, scores: torch.Tensor, labels: torch.Tensor, **kwargs) -> float:
    b, length = scores.shape
    model = _StubModel(scores.flatten())
    loss = loss_cls(model, **kwargs)
    inputs = [[f"q{i}" for i in range(b)], [[f"d{i}_{j}" for j in range(length)] for i in range(b)]]
    return loss(inputs, [labels[i] for i in range(b)]).item()


def _lists():
    # every list has the same label multiset, so ST's global pair mean equals our per-list mean
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, generator=g)
    base = torch.tensor([2.0, 1.0, 1.0, 0.0, 0.0])
    labels = torch.stack([base[torch.randperm(5, generator=g)] for _ in range(3)])
    return scores, labels


def test_ranknet_matches_sentence_transformers():
    scores, labels = _lists()
    ref = _st_value(st_losses.RankNetLoss, scores, labels, reduction_log="natural")
    assert RankNetLoss()(scores, labels).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    ("scheme", "st_scheme"),
    [("ndcg2pp", "NDCGLoss2PPScheme"), ("ndcg2", "NDCGLoss2Scheme"), ("lambdarank", "LambdaRankScheme")],
)
def test_lambdaloss_matches_sentence_transformers(scheme, st_scheme):
    scores, labels = _lists()
    ref = _st_value(st_losses.LambdaLoss, scores, labels, weighting_scheme=getattr(st_losses, st_scheme)(), reduction_log="natural")
    assert LambdaLoss(scheme=scheme)(scores, labels).item() == pytest.approx(ref, rel=1e-5)


def test_listnet_matches_sentence_transformers():
    scores, labels = _lists()
    ref = _st_value(st_losses.ListNetLoss, scores, labels)
    assert ListNetLoss()(scores, labels).item() == pytest.approx(ref, rel=1e-5)
