"""Training a recommender for a few steps in a test."""

from __future__ import annotations

import torch


def adam_steps(model: torch.nn.Module, batch: dict, steps: int, lr: float = 1e-2) -> None:
    """``steps`` Adam updates of ``model.calculate_loss(batch)`` (one fresh optimiser)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model.calculate_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
