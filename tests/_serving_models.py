"""Tiny randomly initialised model directories for the serving tests (built in seconds)."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_cross_encoder_dir(directory: Path, max_length: int = 48) -> Path:
    """A 2-layer, 32-wide BERT cross-encoder with the bundled MiniLM tokenizer, saved as a rankwise dir."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rankers.bi_encoder import default_encoder_path
    from rankers.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )
    CrossEncoder(BertForSequenceClassification(config), tokenizer, max_length=max_length).save_pretrained(directory)
    return directory


def tiny_sasrec_dir(directory: Path, n_items: int = 40) -> Path:
    """A 2-block, 16-wide SASRec with string item ids ``i1..iN``, saved as a rankwise dir."""
    from recsys.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=n_items, hidden=16, n_layers=2, n_heads=2, max_len=20, dropout=0.0)).eval()
    model.item_ids = [f"i{k}" for k in range(1, n_items + 1)]
    model.save_pretrained(directory)
    return directory
