"""SmoothQuant for onnxruntime's dynamic int8 export, with a per-MatMul search of the migration strength.

Paper: Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023. Our variant (*ours*: the paper uses one global α and static activation scales):
each weight MatMul gets its own α, chosen on calibration pairs, and activations stay dynamically
quantised (one uint8 range per tensor per run, as ``rankwise export --quantize int8`` does).

Why: dynamic int8 takes one activation range per tensor. A few channels of a BERT encoder's
activations are 10-100x larger than the rest, so they set the range and the other channels keep only
a few levels. For a weight MatMul ``Y = X W`` (``X: (rows, K)``, ``W: (K, N)``) a positive per-channel
scale ``s: (K,)`` leaves the product unchanged,

    ``Y = (X diag(s)^-1) (diag(s) W)``,

and moves range from the activation channels into the weight rows, where int8 has per-column scales.
The paper's scale is ``s_k = max|X[:, k]|^α / max|W[k, :]|^(1-α)``; here α is picked per MatMul from
:data:`ALPHAS` (``None`` = no smoothing) by the error of the simulated int8 product on the calibration
activations,

    ``err(α) = Σ_batches mean((Q_a(X_b / s) Q_w(diag(s) W) - X_b W)²)``,

with ``Q_a`` per-tensor asymmetric uint8 with the batch's own range (onnxruntime's
``DynamicQuantizeLinear``) and ``Q_w`` symmetric int8 per output column. In the graph, ``diag(s) W``
replaces the weight initializer and a ``Mul`` by ``1/s`` is inserted before the MatMul (the producer
of ``X`` is usually a LayerNorm that also feeds the residual, so the division cannot be folded into
it). Then :func:`onnxruntime.quantization.quantize_dynamic` runs as for plain int8.

Measured (ad hoc, PyTorch simulation of the same arithmetic on the trained SciFact MiniLM
cross-encoder; BM25 top-32 of 20 test queries, calibration on 16 train queries): Kendall τ to the fp32
scores 0.907 without smoothing, 0.773 with the paper's global α = 0.5, 0.930 with α = 0.7, 0.950 with
the per-MatMul search (chosen α 0.75-1.0); calibrated on 5 short pairs only, 0.78 — calibration pairs
must look like the served traffic. The served result is in ``benchmarks/serving_latency.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHAS", "smooth_for_dynamic_int8", "weight_matmuls"]

ALPHAS: tuple[float | None, ...] = (None, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
"""Candidate migration strengths per MatMul; ``None`` keeps the MatMul unsmoothed."""

MAX_ROWS_PER_BATCH = 1024
"""Activation rows kept per calibration batch for the α search (a strided subsample; the batch's
per-tensor range is still taken over all its rows)."""


def weight_matmuls(model) -> list:  # noqa: ANN001 (onnx.ModelProto)
    """The nodes dynamic int8 quantises: ``MatMul`` / fused ``Attention`` whose weight input is an
    initializer (activation x activation products are left alone)."""
    weights = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in ("MatMul", "Attention") and n.input[1] in weights]


def _quant_weight(w: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output column of ``w: (K, N)``."""
    scale = np.maximum(np.abs(w).max(axis=0, keepdims=True) / 127.0, np.finfo(np.float32).tiny)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


def _scales(x_absmax: np.ndarray, w: np.ndarray, alpha: float | None) -> np.ndarray:
    """``s: (K,)`` for ``w: (K, N)``; ones when ``alpha`` is None."""
    if alpha is None:
        return np.ones(w.shape[0], dtype=np.float32)
    w_absmax = np.abs(w).max(axis=1)
    s = np.maximum(x_absmax, 1e-5) ** alpha / np.maximum(w_absmax, 1e-5) ** (1.0 - alpha)
    return s.astype(np.float32)


@dataclass
class _BatchStats:
    """One calibration batch's activation of one MatMul: per-channel extremes over all its rows
    (they give the per-tensor range after any scaling ``s > 0``) and a strided subsample of rows."""

    channel_min: np.ndarray  # (K,)
    channel_max: np.ndarray  # (K,)
    rows: np.ndarray  # (≤ MAX_ROWS_PER_BATCH, K)


def _search(batches: list[_BatchStats], w: np.ndarray, alphas: Sequence[float | None]) -> tuple[float | None, np.ndarray]:
    """The α (and its ``s``) minimising the simulated int8 error of ``X W`` over the calibration
    batches (``w: (K, N)``)."""
    x_absmax = np.max([np.maximum(-b.channel_min, b.channel_max) for b in batches], axis=0)  # (K,)
    exact = [b.rows @ w for b in batches]
    best: tuple[float, float | None, np.ndarray] | None = None
    for alpha in alphas:
        s = _scales(x_absmax, w, alpha)
        wq = _quant_weight(w * s[:, None])
        err = 0.0
        for b, y in zip(batches, exact):
            lo, hi = min(float((b.channel_min / s).min()), 0.0), max(float((b.channel_max / s).max()), 0.0)
            scale = max((hi - lo) / 255.0, np.finfo(np.float32).tiny)  # the whole batch's range
            zero = np.round(-lo / scale)
            xq = ((np.clip(np.round(b.rows / s / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)
            err += float(np.mean((xq @ wq - y) ** 2))
        if best is None or err < best[0]:
            best = (err, alpha, s)
    return best[1], best[2]


def _calibration_activations(model, feeds: Sequence[dict[str, np.ndarray]], names: list[str]) -> dict[str, list[_BatchStats]]:  # noqa: ANN001
    """Run ``model`` on each feed with the activations ``names`` exposed as extra outputs."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the probed tensors
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    found: dict[str, list[_BatchStats]] = defaultdict(list)
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        for n, v in zip(names, values):
            x = v.reshape(-1, v.shape[-1]).astype(np.float32)
            found[n].append(_BatchStats(x.min(axis=0), x.max(axis=0), x[:: max(1, len(x) // MAX_ROWS_PER_BATCH)].copy()))
    return found


def smooth_for_dynamic_int8(
    model,  # noqa: ANN001 (onnx.ModelProto)
    calibration_feeds: Sequence[dict[str, np.ndarray]],
    alphas: Sequence[float | None] = ALPHAS,
) -> dict[str, float | None]:
    """Smooth every weight MatMul of ``model`` in place (see the module docstring) and return
    ``{op name: chosen α or None}``; the graph computes the same function in fp32 (up to rounding).

    Args:
        model: an fp32 ``onnx.ModelProto`` (fused or plain), modified in place.
        calibration_feeds: run-sized input batches (e.g. 32 tokenised pairs each, padded as served),
            whose activations choose the scales. They should look like the served traffic.
        alphas: candidate strengths; ``None`` among them allows leaving a MatMul as it is.

    Raises:
        ValueError: no calibration feeds, or no weight MatMul in the graph.
    """
    import onnx
    from onnx import numpy_helper

    if not calibration_feeds:
        raise ValueError("smooth_for_dynamic_int8: calibration_feeds is empty")
    nodes = weight_matmuls(model)
    if not nodes:
        raise ValueError("smooth_for_dynamic_int8: the graph has no MatMul with a weight initializer")
    inits = {t.name: t for t in model.graph.initializer}
    uses = defaultdict(int)
    for n in model.graph.node:
        for i in n.input:
            uses[i] += 1
    nodes = [n for n in nodes if uses[n.input[1]] == 1]  # a weight shared by two ops cannot take one op's scales
    acts = _calibration_activations(model, calibration_feeds, sorted({n.input[0] for n in nodes}))
    choice: dict[str, float | None] = {}
    muls = {}  # weight initializer name (used by this op alone) -> the Mul node to insert before the op
    for node in nodes:
        name = node.name or node.input[1]
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)  # (K, N)
        alpha, s = _search(acts[node.input[0]], w, alphas)
        choice[name] = alpha
        if alpha is None:
            continue
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
        inv = f"{node.input[1]}_smooth_inv_scale"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        smoothed = f"{node.input[0]}_smoothed_for_{name}"
        muls[node.input[1]] = onnx.helper.make_node("Mul", [node.input[0], inv], [smoothed], name=f"{name}_smooth")
        node.input[0] = smoothed
    ordered = []
    for node in model.graph.node:
        if len(node.input) > 1 and node.input[1] in muls:
            ordered.append(muls[node.input[1]])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return choice
