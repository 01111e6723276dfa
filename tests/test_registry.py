"""A model kind added to the registry alone is loadable by every loader and exportable."""

from __future__ import annotations

import json

import pytest

from rankwise.core import registry
from rankwise.rankers.cross_encoder import CrossEncoder
from tests._serving_models import tiny_cross_encoder_dir


class MyCrossEncoder(CrossEncoder):
    """A new kind: the class lives in its own module (here, this test) and is registered once."""

    kind = "my-cross-encoder"


def test_a_kind_registered_once_loads_and_exports_everywhere(tmp_path, monkeypatch):
    from rankwise.rankers import RANKER_KINDS, load_ranker
    from rankwise.serving.api import Reranker
    from rankwise.serving.export import export_model

    kind = registry.ModelKind("my-cross-encoder", "tests.test_registry:MyCrossEncoder", "rerank",
                              "rankwise.serving.graphs:cross_encoder_graph")
    monkeypatch.setitem(registry._KINDS, kind.name, kind)
    model = tiny_cross_encoder_dir(tmp_path / "model")
    meta = json.loads((model / "rankwise.json").read_text())
    (model / "rankwise.json").write_text(json.dumps({**meta, "kind": kind.name}))
    assert kind.name in RANKER_KINDS
    scores = load_ranker(model).score("q", ["a", "b"])
    assert Reranker.load(model, device="cpu").score("q", ["a", "b"]).tolist() == pytest.approx(scores.tolist(), abs=1e-6)
    export_model(model, tmp_path / "onnx")
    assert Reranker.load(tmp_path / "onnx", device="cpu").score("q", ["a", "b"]).tolist() == pytest.approx(scores.tolist(), abs=1e-4)


def test_bad_kinds_are_refused():
    with pytest.raises(ValueError, match="module:name"):
        registry.ModelKind("x", "no-colon", "rerank")
    with pytest.raises(KeyError, match="unknown model kind"):
        registry.model_kind("nope")
