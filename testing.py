"""Tiny randomly initialised model directories, built in seconds: for tests, examples and benchmarks
that need a real rankwise model directory of some kind without downloading or training one.

Every builder seeds torch, so the same call gives the same weights. The models rank at random; they
exercise loading, export, serving and error paths, not ranking quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["tiny_cross_encoder_dir", "tiny_bi_encoder_dir", "tiny_erank_dir", "tiny_recommender_dir", "tiny_sasrec_dir"]


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


def tiny_recommender_dir(directory: Path, kind: str = "sasrec", n_items: int = 40) -> Path:
    """A 2-block, 16-wide recommender of ``kind`` with string item ids ``i1..iN``, saved as a rankwise dir.

    ``kind``: ``sasrec``, ``hstu``, ``rearec-erl``, ``rearec-prl``, ``rearec-hstu-erl``, ``rearec-hstu-prl``, ``hllm`` (random cached item vectors),
    ``hcn`` (attention readout) or ``hcn-max`` (multi-interest user vectors, max scoring).
    """
    from rankwise import recsys

    torch.manual_seed(0)
    common = {"n_items": n_items, "hidden": 16, "n_layers": 2, "n_heads": 2, "max_len": 20, "dropout": 0.0}
    if kind == "sasrec":
        model = recsys.SASRec(recsys.SASRecConfig(**common))
    elif kind.startswith("rearec-hstu"):
        model = recsys.ReaRecHSTU(recsys.ReaRecHSTUConfig(**common, objective=kind.split("-")[2]))
    elif kind.startswith("rearec"):
        model = recsys.ReaRec(recsys.ReaRecConfig(**common, objective=kind.split("-")[1]))
    elif kind == "hstu":
        model = recsys.HSTU(recsys.HSTUConfig(**common))
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


def tiny_erank_dir(directory: Path, texts: list[str]) -> Path:
    """ERank (integer readout) on a tiny random causal LM whose BPE tokenizer is trained on ``texts``."""
    from rankwise.rankers.erank import ERankRanker
    from rankwise.rankers.llm import tiny_causal_lm

    model, tok = tiny_causal_lm(texts + ["0 1 2 3 4 5 6 7 8 9 10 yes no Yes No"] * 5, hidden=16)
    ERankRanker(model, tok, readout="integer", max_doc_tokens=12).save_pretrained(directory)
    return directory
