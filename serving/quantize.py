"""Quantisation and graph rewrites of an exported ONNX graph: onnxruntime's transformer fusion,
dynamic int8 of the weight MatMuls, the calibration batches of SmoothQuant / mixed precision, and a
bool ``EyeLike`` rewrite some runtimes need: the recipes :func:`rankwise.serving.export.export_model`
composes per ``quantize`` setting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.serving.graphs import ExportGraph


class _DropLogLine(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _cast_bool_eyelike(path: Path) -> None:
    """Rewrite bool ``EyeLike`` (from ``torch.eye(..., dtype=torch.bool)``) as int32 EyeLike + Cast.

    onnxruntime implements EyeLike for numeric types only, so such graphs would not load.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    if not any(n.op_type == "EyeLike" for n in model.graph.node):
        return
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "EyeLike" and types.get(node.output[0]) == TensorProto.BOOL:
            src, out = node.input[0], node.output[0]
            kept = [a for a in node.attribute if a.name == "k"]
            nodes += [
                helper.make_node("Cast", [src], [src + "_int32"], to=TensorProto.INT32, name=node.name + "_in"),
                helper.make_node("EyeLike", [src + "_int32"], [out + "_int32"], dtype=TensorProto.INT32,
                                 name=node.name, **{a.name: a.i for a in kept}),
                helper.make_node("Cast", [out + "_int32"], [out], to=TensorProto.BOOL, name=node.name + "_out"),
            ]
        else:
            nodes.append(node)
    if len(nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.save(model, str(path))


EXTERNAL_DATA_BYTES = 1_900_000_000
"""Graphs larger than this are saved as ``model.onnx`` + ``model.onnx.data`` (protobuf's limit is 2 GB)."""


def _fuse_encoder(path: Path, config: Any, work: Path) -> tuple[Path, dict[str, int]] | None:
    """onnxruntime's transformer fusion of a BERT-family encoder graph: each layer's Q/K/V MatMuls,
    scaled dot product, mask and softmax become one ``Attention`` op, and the embeddings, residual
    LayerNorms and bias + GELU become ``EmbedLayerNormalization``, ``SkipLayerNormalization`` and
    ``BiasGelu``. ``Attention`` takes its mask as per-row lengths, so inputs must be right-padded (as
    the saved tokenizer pads). Returns the fused graph and its fused-op counts, or ``None`` when not
    every layer's attention fused (the caller keeps the plain graph)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0)
    finally:
        quiet.setLevel(level)
    counts = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    inputs = [i.name for i in model.model.graph.input]
    original = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    if counts.get("Attention", 0) != config.num_hidden_layers or inputs != original:
        return None  # partial fusion, or the fused graph dropped an input (e.g. an unused token_type_ids)
    fused = work / "fused.onnx"
    model.save_model_to_file(str(fused), use_external_data_format=_has_external_data(work))
    return fused, counts


MIN_CALIBRATION_PAIRS = 32
CALIBRATION_BATCH = 32
SENSITIVITY_PAIRS = 128
"""``fp32_ops``: at most about this many calibration pairs (evenly strided) score each one-op probe."""


def _calibration_feeds(graph: ExportGraph, pairs: Sequence[tuple[str, str]]) -> list[dict[str, np.ndarray]]:
    """``pairs`` batched as served (:func:`~serving.runtime.bucket_batches` by length, at most
    :data:`CALIBRATION_BATCH` a batch; one query per batch for a shared-prefix graph), each batch
    padded to its longest pair."""
    from rankwise.serving.runtime import bucket_batches

    groups = [list(pairs)]
    if graph.metadata.get("shared_prefix"):  # a shared-prefix batch holds one query's documents, as served
        by_query: dict[str, list[tuple[str, str]]] = {}
        for q, d in pairs:
            by_query.setdefault(q, []).append((q, d))
        groups = list(by_query.values())
    feeds = []
    for group in groups:
        lengths = [len(q) + len(d) for q, d in group]  # characters: a proxy of the token count for ordering
        feeds += [{k: v.numpy() for k, v in graph.make_feeds([group[i] for i in batch]).items()}
                  for batch in bucket_batches(lengths, CALIBRATION_BATCH)]
    return feeds


def _quantize_dynamic_int8(src: Path, dst: Path, nodes: list[str], reduce_range: bool | None = None) -> None:
    """onnxruntime dynamic int8 of the weight ops ``nodes`` of ``src`` (QInt8 per-channel weights;
    activations quantised at run time, one range per tensor), written to ``dst``.

    Per-channel weight scales and only weight MatMuls (fused: the Attention's QKV projection too);
    activation x activation products (attention scores), embeddings, pooler and head stay fp32.
    ``reduce_range``: 7-bit weights (``[-64, 64]``, onnxruntime's ``reduce_range``) instead of
    ``[-127, 127]``; ``None``: :func:`dynamic_int8_reduce_range` of this machine."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if reduce_range is None:
        reduce_range = dynamic_int8_reduce_range()

    hint = _DropLogLine("pre-processing before quantization")  # onnxruntime's root-logger advice
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                         nodes_to_quantize=nodes,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                         use_external_data_format=_has_external_data(src.parent))
    finally:
        logging.getLogger().removeFilter(hint)


def dynamic_int8_reduce_range() -> bool:
    """The weight range of a dynamic int8 export made on this machine: 7-bit (``True``) on an x86-64
    CPU without VNNI, where onnxruntime's u8 x s8 kernel sums pairs of products in int16 and
    full-range weights saturate it (measurements: ``docs/notes.md``); full 8-bit elsewhere. Export on
    the machine kind that will serve, or pass the range explicitly."""
    from rankwise.core.device import cpu_has_vnni

    return not cpu_has_vnni()


def int8_weight_levels(reduce_range: bool | None = None) -> int:
    """The largest int8 weight magnitude of a dynamic int8 export: 64 with 7-bit weights
    (``reduce_range``; onnxruntime's reduced symmetric range is ``[-64, 64]``), 127 without;
    ``None``: this machine's :func:`dynamic_int8_reduce_range`."""
    return 64 if (dynamic_int8_reduce_range() if reduce_range is None else reduce_range) else 127


def _has_external_data(folder: Path) -> bool:
    return any(p.is_file() and p.suffix != ".onnx" for p in folder.iterdir())


def _quantize_static_int8(src: Path, dst: Path, nodes: list[str], feeds: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime static int8 (QDQ) of the weight ops ``nodes`` of ``src``: per-channel int8 weights
    and int8 activations whose ranges are calibrated once on ``feeds`` (MinMax over the calibration
    batches), so the graph runs without computing activation ranges at run time."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    hint = _DropLogLine("pre-processing before quantization")
    logging.getLogger().addFilter(hint)
    try:
        quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                        use_external_data_format=_has_external_data(src.parent))
    finally:
        logging.getLogger().removeFilter(hint)
