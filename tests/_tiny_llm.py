"""A tiny random causal LM with a BPE tokenizer built in-process, warmed up on an answer format."""

from __future__ import annotations

from rankwise.rankers.llm import tiny_causal_lm

CORPUS = [
    "Query: red apple\nDocument: a red apple\n[1] red fruit\n[2] blue sky\n[A] [B] [C] [D]\n",
    "0 1 2 3 4 5 6 7 8 9 10 yes no Yes No Score: 7 > [3] > [1] > [2]\n",
]


def tiny(hidden: int = 32, layers: int = 2, seed: int = 0):
    """(model, tokenizer) randomly initialised, built in well under a second."""
    return tiny_causal_lm(CORPUS * 10, vocab_size=320, hidden=hidden, layers=layers, seed=seed)


def warm_up(model, tokenizer, rows, steps: int = 60, lr: float = 1e-2) -> None:
    """Teach ``rows`` (prompt/completion) by teacher forcing so that sampled answers have the right shape.

    A plain loop (the library path, ``train.sft``, is tested on its own): ~10 ms a step here.
    """
    import torch

    enc = [
        (tokenizer(r["prompt"], add_special_tokens=False)["input_ids"], tokenizer(r["completion"], add_special_tokens=False)["input_ids"])
        for r in rows
    ]
    width = max(len(p) + len(c) for p, c in enc)
    ids = torch.full((len(enc), width), tokenizer.pad_token_id)
    labels = torch.full((len(enc), width), -100)
    for i, (p, c) in enumerate(enc):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()


def one_thread():
    """Generator for a module fixture: tiny models are overhead-bound, and two OpenMP threads on a
    busy 2-core machine spin far more than they compute (a 20-token generate: 10 s vs 0.15 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
