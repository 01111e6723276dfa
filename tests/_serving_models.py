"""Tiny randomly initialised model directories for the serving tests (built in seconds)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rankwise.rankers.base import Ranker


def tiny_cross_encoder_dir(directory: Path, max_length: int = 48, initializer_range: float = 0.02) -> Path:
    """A 2-layer, 32-wide BERT cross-encoder with the bundled MiniLM tokenizer, saved as a rankwise dir.

    ``initializer_range``: std of the random weights; BERT's 0.02 gives near-zero logits, larger
    values give scores spread like a trained model's (for tests of score error)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rankwise.rankers.bi_encoder import default_encoder_path
    from rankwise.rankers.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1, initializer_range=initializer_range,
    )
    CrossEncoder(BertForSequenceClassification(config), tokenizer, max_length=max_length).save_pretrained(directory)
    return directory


def outlier_cross_encoder_dir(root: Path) -> Path:
    """``root/outlier``: the tiny cross-encoder (spread scores) with FFN hidden channel 3 ~50x larger than
    the others: its FFN-in row is scaled up and its FFN-out column down by the same factor (GELU is ~linear
    for large inputs, so the scores stay spread out). One int8 range per tensor then loses the other
    channels, so int8 reorders the scores."""
    from rankwise.rankers.cross_encoder import CrossEncoder

    ce = CrossEncoder.from_pretrained(tiny_cross_encoder_dir(root / "plain", initializer_range=0.2))
    with torch.no_grad():
        for layer in ce.model.bert.encoder.layer:
            layer.intermediate.dense.weight[3] *= 50.0
            layer.intermediate.dense.bias[3] *= 50.0
            layer.output.dense.weight[:, 3] /= 50.0
    ce.save_pretrained(root / "outlier")
    return root / "outlier"


def tiny_recommender_dir(directory: Path, kind: str = "sasrec", n_items: int = 40) -> Path:
    """A 2-block, 16-wide recommender of ``kind`` with string item ids ``i1..iN``, saved as a rankwise dir.

    ``kind``: ``sasrec``, ``rearec-erl``, ``rearec-prl``, ``hllm`` (random cached item vectors),
    ``hcn`` (attention readout) or ``hcn-max`` (multi-interest user vectors, max scoring).
    """
    from rankwise import recsys

    torch.manual_seed(0)
    common = {"n_items": n_items, "hidden": 16, "n_layers": 2, "n_heads": 2, "max_len": 20, "dropout": 0.0}
    if kind == "sasrec":
        model = recsys.SASRec(recsys.SASRecConfig(**common))
    elif kind.startswith("rearec"):
        model = recsys.ReaRec(recsys.ReaRecConfig(**common, objective=kind.split("-")[1]))
    elif kind == "hllm":
        model = recsys.HLLM(recsys.HLLMConfig(**common, item_dim=8), item_vectors=torch.randn(n_items + 1, 8))
    else:
        model = recsys.HCN(recsys.HCNConfig(**common, scoring="max" if kind == "hcn-max" else "attention"))
    model.eval()
    model.item_ids = [f"i{k}" for k in range(1, n_items + 1)]
    model.save_pretrained(directory)
    return directory


def tiny_sasrec_dir(directory: Path, n_items: int = 40) -> Path:
    """A 2-block, 16-wide SASRec with string item ids ``i1..iN``, saved as a rankwise dir."""
    return tiny_recommender_dir(directory, "sasrec", n_items)


class HashRanker(Ranker):
    """A deterministic stand-in ranker: score = a hash of (query, doc); optionally slow or failing.

    Args:
        delay_s: sleep per :meth:`score` call (to kill a job mid-run).
        fail_after: raise after this many calls (to crash a job in-process).
        log: a list that records every scored query.
    """

    def __init__(self, delay_s: float = 0.0, fail_after: int | None = None, log: list | None = None) -> None:
        self.delay_s, self.fail_after, self.log, self.calls = delay_s, fail_after, log, 0

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("HashRanker: simulated crash")
        self.calls += 1
        if self.log is not None:
            self.log.append(query)
        time.sleep(self.delay_s)
        return np.array([int(hashlib.sha1(f"{query}|{d}".encode()).hexdigest()[:8], 16) / 2**32 for d in docs])


def scifact_slice(data_dir: Path, out_dir: Path, n_queries: int = 12, per_query: int = 5) -> Path:
    """A small TREC run over real SciFact test queries: each query's judged docs + fixed others."""
    from rankwise.eval.datasets.beir import load_beir

    ds = load_beir(data_dir / "beir" / "scifact", "test")
    qids = sorted(ds.qrels)[:n_queries]
    others = sorted(ds.corpus)[:per_query]
    lines = []
    for qid in qids:
        docs = (list(ds.qrels[qid]) + [d for d in others if d not in ds.qrels[qid]])[:per_query]
        lines += [f"{qid} Q0 {d} {r + 1} {10.0 - r:.3f} bm25\n" for r, d in enumerate(docs)]
    run = out_dir / "candidates.trec"
    run.write_text("".join(lines))
    return run


def tiny_bi_encoder_dir(directory: Path) -> Path:
    """A scaled-cosine bi-encoder whose query and document towers are a 2-layer, 32-wide BERT."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankwise.rankers.bi_encoder import default_encoder_path
    from rankwise.rankers.bi_encoder_ranker import TrainableBiEncoder

    torch.manual_seed(0)
    base = directory.parent / (directory.name + "-base")
    tokenizer = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    TrainableBiEncoder.from_pretrained(base, max_length=16, doc_max_length=32, cache=False).save_pretrained(directory)
    return directory
