"""Quantisation-aware training for onnxruntime's dynamic int8 export of a BERT-family encoder.

``rankwise export --quantize int8`` (:func:`serving.export.export_model`) runs onnxruntime's dynamic
quantisation on every weight MatMul of the encoder layers (QKV, attention output, FFN in and out;
embeddings, pooler and head stay fp32). That is about twice as fast as fp32 on a VNNI CPU but moves
scores enough to cost ranking quality (``docs/results.md``, serving_latency). Fine-tuning the
model *through a simulation of that arithmetic*, distilled against its own fp32 scores, teaches
the weights to absorb the rounding; the result is exported with the same ``--quantize int8``.

The simulation of one quantised ``y = x W^T + b`` (``x: (..., K)``, ``W: (N, K)``):

    weights, per output channel n, symmetric int8 (``q = 127``; ``q = 64`` for 7-bit weights):
        ``s_n = max_k |W[n, k]| / q``;  ``Ŵ[n, k] = s_n · clamp(round(W[n, k] / s_n), -q, q)``
    activations, per tensor (the whole padded batch), asymmetric uint8, range taken at run time:
        ``lo = min(0, min x)``, ``hi = max(0, max x)``, ``a = (hi - lo) / 255``, ``z = round(-lo / a)``;
        ``x̂ = a · (clamp(round(x / a) + z, 0, 255) - z)``
    output: ``ŷ = x̂ Ŵ^T + b``

which is what onnxruntime's ``DynamicQuantizeLinear`` + ``MatMulInteger`` (and ``QAttention`` for
the fused QKV projection) compute, up to int32 accumulation order. On an x86-64 CPU without VNNI
onnxruntime's kernel sums pairs of u8 x s8 products in int16, which full-range weights saturate; the
export then uses 7-bit weights (``reduce_range``, :func:`serving.quantize.dynamic_int8_reduce_range`)
and the simulation must use the same ``q``. Rounding uses the
straight-through estimator: the forward pass sees ``x̂``, the backward pass treats it as ``x``
(no clipping happens, the range is the tensor's own).

Measurements and the state of this experiment: ``docs/notes.md``.

Use it through the trainer (``CrossEncoderTrainerConfig(int8_aware=True)`` with a ``teacher``)
or the CLI: ``rankwise train cross-encoder --objective distill-mse --teacher DIR --model DIR
--int8-aware``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["fake_quant_weight", "fake_quant_activation", "int8_quantised_linears", "simulate_onnx_int8"]


def _straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    """``rounded`` in the forward pass, the identity's gradient in the backward pass."""
    return x + (rounded - x).detach()


def fake_quant_weight(weight: Tensor, levels: int = 127) -> Tensor:
    """Per-output-channel symmetric rounding of ``weight (N, K)`` to ``[-levels, levels]``
    (straight-through): 127 for int8, 64 for onnxruntime's 7-bit ``reduce_range``."""
    with torch.no_grad():
        scale = (weight.abs().amax(dim=1, keepdim=True) / levels).clamp(min=torch.finfo(weight.dtype).tiny)  # (N, 1)
        rounded = torch.round(weight / scale).clamp(-levels, levels) * scale  # (N, K)
    return _straight_through(weight, rounded)


def fake_quant_activation(x: Tensor) -> Tensor:
    """Per-tensor asymmetric uint8 rounding of ``x`` with its own run-time range (straight-through)."""
    with torch.no_grad():
        lo = x.min().clamp(max=0.0)
        hi = x.max().clamp(min=0.0)
        scale = ((hi - lo) / 255).clamp(min=torch.finfo(x.dtype).tiny)
        zero = torch.round(-lo / scale).clamp(0, 255)
        rounded = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
    return _straight_through(x, rounded)


def int8_quantised_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose MatMuls the int8 export quantises: those inside the encoder
    layers (``*.encoder.layer.<i>.*``); embeddings, pooler and classification head are left fp32."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".encoder.layer." in f".{n}"]
    if not found:
        raise ValueError(f"{type(model).__name__}: no encoder-layer Linear modules to simulate int8 on "
                         "(expected a BERT-family encoder with modules named *.encoder.layer.<i>.*)")
    return found


def _simulated_forward(linear: nn.Linear, levels: int):
    def forward(x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        return nn.functional.linear(fake_quant_activation(x), fake_quant_weight(linear.weight, levels), linear.bias)

    return forward


@contextmanager
def simulate_onnx_int8(model: nn.Module, reduce_range: bool | None = None) -> Iterator[list[str]]:
    """Inside the block, the encoder-layer Linears of ``model`` compute their int8-export outputs
    (see the module docstring) with straight-through gradients; on exit they are plain fp32 again.
    The weights themselves are never rounded in place. Yields the names of the simulated modules.
    ``reduce_range``: simulate 7-bit weights, as the export does with ``int8_reduce_range``;
    ``None``: this machine's export default (:func:`serving.quantize.dynamic_int8_reduce_range`).

    Example:
        >>> with simulate_onnx_int8(ce.model):  # doctest: +SKIP
        ...     loss = ((ce.logits(q, d) - teacher_logits) ** 2).mean()
    """
    from rankwise.serving.quantize import int8_weight_levels

    levels = int8_weight_levels(reduce_range)
    linears = int8_quantised_linears(model)
    for _, linear in linears:
        linear.forward = _simulated_forward(linear, levels)
    try:
        yield [n for n, _ in linears]
    finally:
        for _, linear in linears:
            del linear.forward  # back to the class's forward
