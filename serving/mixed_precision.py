"""Mixed-precision dynamic int8: the weight MatMuls that hurt the scores most stay in fp32.

Dynamic int8 (``rankwise export --quantize int8`` / ``int8-smooth``) quantises every weight MatMul of
the encoder, but the score error is not spread evenly. Measured sensitivities are
in ``docs/notes.md``. Leaving the ``k`` worst ops in fp32
removes most of the error at the price of ``k`` fp32 MatMuls (an FFN MatMul is 1/18 of MiniLM-L6's weight
FLOPs and runs ≈ 2x slower in fp32 than in int8).

Sensitivity of op ``n`` (*ours*, the usual one-op-at-a-time probe of mixed-precision quantisation):
quantise ``n`` alone, run the calibration batches, and compare the scores with the fp32 graph's,

    ``sens(n) = mean_pairs (s_n − s_fp32)² / var_pairs(s_fp32)``,

i.e. the share of the score variance that quantising ``n`` adds as noise. The ``k`` ops with the largest
``sens`` stay fp32; the rest are quantised together. Cost: one quantisation and one calibration pass per
weight op, on at most ``serving.export.SENSITIVITY_PAIRS`` of the calibration pairs (24 ops for the fused
MiniLM-L6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["int8_sensitivity", "most_sensitive"]

Quantizer = Callable[[Path, Path, list[str]], None]
"""``quantize(src, dst, node_names)``: write ``dst`` = ``src`` with only ``node_names`` quantised."""


def _scores(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    from rankwise.serving.runtime import OnnxSession

    session = OnnxSession(path, device="cpu")
    return np.concatenate([np.asarray(session.run(feed), dtype=np.float64).reshape(-1) for feed in feeds])


def int8_sensitivity(
    fp32_path: Path, feeds: Sequence[dict[str, np.ndarray]], nodes: Sequence[str], quantize: Quantizer, work: Path,
) -> dict[str, float]:
    """``{node: sens}`` (module docstring) for each of ``nodes`` of the fp32 graph at ``fp32_path``.

    Args:
        fp32_path: the fp32 (possibly fused and smoothed) graph.
        feeds: calibration batches, as served.
        nodes: names of the weight ops to probe.
        quantize: how one op is quantised (the same call the export then makes for all of them).
        work: scratch folder for the one-op graphs (each is removed after its pass).

    Raises:
        ValueError: no feeds or no nodes.
    """
    if not feeds or not nodes:
        raise ValueError("int8_sensitivity: needs calibration feeds and at least one node")
    reference = _scores(fp32_path, feeds)
    variance = max(float(reference.var()), np.finfo(np.float64).tiny)
    sens = {}
    for name in nodes:
        probe = work / "sensitivity-probe.onnx"
        quantize(fp32_path, probe, [name])
        sens[name] = float(np.mean((_scores(probe, feeds) - reference) ** 2) / variance)
        for f in work.glob("sensitivity-probe.onnx*"):
            f.unlink()
    return sens


def most_sensitive(sens: dict[str, float], k: int) -> list[str]:
    """The ``k`` node names with the largest sensitivity, largest first."""
    if k < 0:
        raise ValueError(f"most_sensitive: k must be >= 0, got {k}")
    return sorted(sens, key=sens.__getitem__, reverse=True)[:k]
