"""Export a rankwise model directory to ONNX, with a parity check against PyTorch at export time.

The exported directory holds ``model.onnx`` (dynamic batch and sequence axes), whatever the
runtime needs to build inputs (the tokenizer, cached item vectors) and ``serving.json``: kind,
input and output names, max length, score mapping, precision, the measured parity and the
rankwise version. :func:`export_model` dispatches on the source directory's ``rankwise.json``
``kind``; each exportable kind registers a graph builder in :data:`~rankwise.serving.graphs.EXPORTERS`.

Where the parts live: graph builders per kind in :mod:`rankwise.serving.graphs`, fusion and
quantisation recipes in :mod:`rankwise.serving.quantize`, calibration pairs in
:mod:`rankwise.serving.calibration`, ``serving.json`` reading in :mod:`rankwise.core.serving_dir`;
this module traces, checks parity and writes the directory.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rankwise.core.model_dir import ModelDirError, read_rankwise_json
from rankwise.core.serving_dir import SERVING_JSON, read_serving_json
from rankwise.serving.calibration import read_pairs_file
from rankwise.serving.graphs import EXPORTERS, ITEM_TOWER_EXPORTERS, PARITY_PAIRS, ExportGraph
from rankwise.serving.runtime import RUNTIMES
from rankwise.serving.quantize import (
    EXTERNAL_DATA_BYTES,
    MIN_CALIBRATION_PAIRS,
    SENSITIVITY_PAIRS,
    _calibration_feeds,
    _cast_bool_eyelike,
    _fuse_encoder,
    _has_external_data,
    _quantize_dynamic_int8,
    _quantize_static_int8,
    dynamic_int8_reduce_range,
    int8_weight_levels,
)

__all__ = [
    "EXPORTERS",
    "SERVING_JSON",
    "ExportGraph",
    "ExportParityError",
    "ExportResult",
    "export_model",
    "read_serving_json",
    "PARITY_PAIRS",
    "read_pairs_file",
]

log = logging.getLogger("rankwise.serving")

ONNX_FILE = "model.onnx"
HEAD_FILE = "head.onnx"  # the fp32 graph of an export with an exact head (serving.cascade)
OPSET = 17
BLOCKWISE_INT8_BLOCK = 128  # input channels per MatMulNBits block (one weight scale, one activation scale)

class ExportParityError(RuntimeError):
    """The exported graph disagrees with PyTorch beyond the tolerance on real inputs."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how close it is to PyTorch."""

    output_dir: Path
    kind: str
    precision: str
    parity_max_abs_diff: float
    fp32_parity_max_abs_diff: float
    export_s: float
    runtime: str = "onnxruntime"
    """What serves it on the CPU, with the precision OpenVINO compiled for: ``"openvino (bf16)"``."""


def _finalise(chosen: Path, final: Path) -> None:
    """Move ``chosen`` to ``final``; graphs with external data are gathered into one ``.data`` file."""
    import onnx

    data = final.with_name(final.name + ".data")
    data.unlink(missing_ok=True)
    if not _has_external_data(chosen.parent) and chosen.stat().st_size < EXTERNAL_DATA_BYTES:
        os.replace(chosen, final)
        return
    model = onnx.load(str(chosen))
    onnx.save_model(model, str(final), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)


def _run_onnx(path: Path, inputs: dict[str, Any]) -> np.ndarray:
    from rankwise.serving.runtime import OnnxSession

    return OnnxSession(path, device="cpu").run({k: v.numpy() for k, v in inputs.items()})


def export_model(
    model_dir: str | Path,
    output_dir: str | Path,
    quantize: Literal["int8", "int8-smooth", "int8-static", "int8-blockwise"] | None = None,
    fp16: bool = False,
    parity_pairs: Sequence[tuple[str, str]] | None = None,
    calibration_pairs: Sequence[tuple[str, str]] | None = None,
    tolerance: float = 1e-3,
    opset: int = OPSET,
    part: Literal["model", "item-tower"] = "model",
    fuse: bool = True,
    fp32_ops: int = 0,
    exact_head: int = 0,
    runtime: Literal["auto", "onnxruntime", "openvino"] = "auto",
    openvino_precision: Literal["bf16", "f32"] = "bf16",
    share_prefix: bool = True,
    int8_reduce_range: bool | None = None,
) -> ExportResult:
    """Export ``model_dir`` to ``output_dir/model.onnx`` and check it against PyTorch.

    The fp32 graph is always exported first and must match PyTorch within ``tolerance``
    (max absolute difference of the outputs on real inputs), else :class:`ExportParityError` and
    nothing is left in ``output_dir``. ``quantize="int8"`` then applies onnxruntime's dynamic
    quantisation (QInt8 per-channel weights of the weight MatMuls, activations quantised at run time
    with one range per tensor: the fastest on VNNI CPUs, the largest score error);
    ``quantize="int8-smooth"`` is the same arithmetic after SmoothQuant scaling chosen on
    ``calibration_pairs`` (:mod:`serving.smooth_quant`: same speed, less score error);
    ``quantize="int8-static"`` is onnxruntime's static QDQ int8 of the weight MatMuls (per-channel
    weights, activation ranges calibrated once on ``calibration_pairs``; on the unfused graph, since
    behind onnxruntime's fused contrib ops only the weights would be quantised); ``quantize="int8-blockwise"`` replaces each weight MatMul by onnxruntime's ``MatMulNBits`` with
    8-bit weights in blocks of 128 input channels and ``accuracy_level=4`` (activations quantised to
    int8 per row and block at run time: ~4x less score error, much less speed-up); ``fp16=True`` converts
    the weights to float16 with float32 inputs/outputs (for CUDA); their distance to PyTorch is
    measured and recorded, not bounded, since it is the price of the format.

    Args:
        model_dir: a rankwise model directory (``rankwise.json`` names its kind).
        output_dir: created if needed; an existing ``model.onnx`` there is replaced.
        quantize: ``"int8"`` (dynamic, per-tensor activations), ``"int8-smooth"`` (the same after
            SmoothQuant scaling), ``"int8-blockwise"`` (``MatMulNBits``, per-block activations) or
            ``None`` for fp32.
        fp16: convert to float16 weights (GPU serving); exclusive with ``quantize``.
        parity_pairs: ``(query, doc)`` pairs for tracing and parity; default :data:`PARITY_PAIRS`.
        calibration_pairs: ``(query, doc)`` pairs like the served traffic (e.g. queries with their
            first-stage candidates; a few hundred), required by ``"int8-smooth"``, unused otherwise.
        tolerance: maximum allowed fp32 |ONNX - PyTorch|.
        opset: ONNX opset.
        part: ``"model"`` (the scorer or the user tower) or ``"item-tower"`` (HLLM: item text →
            item vector, for items added after training).
        fuse: fuse a BERT-family encoder's attention, LayerNorms and GELU into onnxruntime's
            contrib ops (:func:`_fuse_encoder`; CPU and CUDA providers) before quantising; the
            fused graph must pass the same parity check, else the plain graph is kept. Not applied
            with ``fp16``.
        fp32_ops: with ``"int8"`` / ``"int8-smooth"``, leave this many weight ops in fp32: those whose
            quantisation alone moves the scores of ``calibration_pairs`` most
            (:mod:`serving.mixed_precision`; required pairs as for ``"int8-smooth"``).
        int8_reduce_range: with ``"int8"`` / ``"int8-smooth"``, 7-bit weights (onnxruntime's
            ``reduce_range``; with ``runtime="openvino"``, NNCF's ``overflow_fix`` in every layer);
            ``None``: 7-bit on an x86-64 CPU without VNNI, whose int8 kernels saturate with
            full-range weights (:func:`serving.quantize.dynamic_int8_reduce_range`). Recorded in
            ``serving.json`` as ``int8_weight_range``.
        exact_head: with ``quantize`` or ``fp16`` on a (query, doc) scorer, also write the fp32 graph
            (``head.onnx``) and let :class:`~serving.onnx_ranker.OnnxRanker` rescore each query's
            top ``exact_head`` documents with it (:mod:`serving.cascade`); 0 = off.
        runtime: ``"auto"`` (default) is :func:`default_runtime`: OpenVINO for an fp32 pair scorer
            where ``openvino`` is installed (the fastest engine within 0.005 nDCG@10 of fp32 in
            ``benchmarks/serving_latency.py``), else onnxruntime. ``"openvino"`` also writes an
            OpenVINO IR (``openvino_model.xml`` + ``.bin``) of the plain (unfused) fp32 graph, or with ``quantize="int8"`` its NNCF post-training int8
            (calibrated on ``calibration_pairs``, at least 32; for the ERank prompt scorer, NNCF int8 weight
            compression, data-free), and serves it with
            :class:`~rankwise.serving.openvino_runtime.OpenVINOSession` (pair scorers only); the parity
            recorded is OpenVINO's at the precision it compiled for (``openvino_precision``).
        openvino_precision: ``"bf16"`` (OpenVINO's CPU default where bf16 is native) or ``"f32"``.
        share_prefix: LLM prompt scorers (ERank): run the prompt prefix that a query's documents
            share once per batch and reuse its keys/values for every document
            (:func:`~serving.graphs.erank_graph`); ``False`` exports whole prompts per row.

    Returns:
        An :class:`ExportResult` (also written, with more fields, to ``serving.json``).

    Example:
        >>> export_model("runs/ce-minilm", "runs/ce-minilm-onnx", quantize="int8")  # doctest: +SKIP
    """
    import torch

    if quantize not in (None, "int8", "int8-smooth", "int8-static", "int8-blockwise"):
        raise ValueError(f"export_model: quantize must be None, 'int8', 'int8-smooth', 'int8-static' or 'int8-blockwise', got {quantize!r}")
    if quantize == "int8-static" and len(calibration_pairs or ()) < MIN_CALIBRATION_PAIRS:
        raise ValueError(f"export_model: quantize='int8-static' needs at least {MIN_CALIBRATION_PAIRS} calibration_pairs "
                         f"like the served traffic, got {len(calibration_pairs or ())}")
    if quantize == "int8-static":
        fuse = False  # QDQ needs plain MatMuls: behind fused contrib ops only the weights would be quantised
    if fp32_ops < 0 or (fp32_ops and quantize not in ("int8", "int8-smooth")):
        raise ValueError(f"export_model: fp32_ops={fp32_ops} needs quantize='int8' or 'int8-smooth' and must be >= 0")
    if (quantize == "int8-smooth" or fp32_ops) and len(calibration_pairs or ()) < MIN_CALIBRATION_PAIRS:
        user = "quantize='int8-smooth'" if quantize == "int8-smooth" else "fp32_ops"
        raise ValueError(f"export_model: {user} needs at least {MIN_CALIBRATION_PAIRS} calibration_pairs "
                         f"like the served traffic, got {len(calibration_pairs or ())}")
    if exact_head < 0 or (exact_head and not (quantize or fp16)):
        raise ValueError(f"export_model: exact_head={exact_head} needs quantize or fp16 (the head is the fp32 graph) "
                         "and must be >= 0")
    if quantize and fp16:
        raise ValueError(f"export_model: choose one of quantize={quantize!r} and fp16=True")
    if runtime not in RUNTIMES:
        raise ValueError(f"export_model: runtime must be one of {RUNTIMES}, got {runtime!r}")
    openvino_int8 = runtime == "openvino" and quantize == "int8"
    if runtime == "openvino":
        if fp16 or quantize not in (None, "int8") or fp32_ops:
            raise ValueError("export_model: runtime='openvino' takes quantize=None or 'int8' (NNCF), no fp16 or fp32_ops")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    meta = read_rankwise_json(model_dir)
    kind = meta["kind"]
    if part not in ("model", "item-tower"):
        raise ValueError(f"export_model: part must be 'model' or 'item-tower', got {part!r}")
    builders = EXPORTERS if part == "model" else ITEM_TOWER_EXPORTERS
    if kind not in builders:
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} has no exportable {part} (exportable: {builders.known()})")
    pairs = list(parity_pairs) if parity_pairs is not None else PARITY_PAIRS
    if len(pairs) < 3:
        raise ValueError("export_model: parity_pairs needs at least 3 pairs (2 trace, all checked)")
    start = time.perf_counter()
    build = builders[kind]
    if "share_prefix" in inspect.signature(build).parameters:  # LLM prompt scorers
        graph = build(model_dir, meta, pairs, share_prefix=share_prefix)
    else:
        graph = build(model_dir, meta, pairs)
    prompt_scorer = graph.metadata.get("encoding") == "prompt"  # a causal LM: OpenVINO int8 = int8 weights, data-free
    if openvino_int8 and not prompt_scorer and len(calibration_pairs or ()) < MIN_CALIBRATION_PAIRS:
        raise ValueError(f"export_model: runtime='openvino' with quantize='int8' needs at least {MIN_CALIBRATION_PAIRS} "
                         f"calibration_pairs like the served traffic, got {len(calibration_pairs or ())}")
    if runtime == "auto":
        runtime = default_runtime(graph.make_feeds is not None, quantize, fp16, exact_head, fp32_ops)
    if exact_head and graph.metadata.get("task") != "pair-score":
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} ({part}) scores no (query, doc) pairs; "
                            "exact_head reranks a query's documents")
    if (quantize == "int8-smooth" or fp32_ops) and graph.make_feeds is None:
        raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} takes no (query, doc) calibration pairs; "
                            "int8-smooth and fp32_ops export pair scorers (use --quantize int8)")
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / ONNX_FILE
    work = output_dir / ".export-tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        fp32 = work / "fp32.onnx"
        names = list(graph.example)
        with torch.inference_mode():
            reference = graph.module(**graph.parity).float().numpy()
        with torch.no_grad(), warnings.catch_warnings():
            # tracer and deprecation chatter: the parity check below is what decides
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module, tuple(graph.example[n] for n in names), str(fp32), input_names=names,
                output_names=[graph.output], dynamic_axes=graph.dynamic_axes, opset_version=opset,
                do_constant_folding=True, dynamo=False,
            )
        _cast_bool_eyelike(fp32)
        plain = fp32  # OpenVINO reads this one: onnxruntime's fused contrib ops are not ONNX it knows
        fp32_diff = float(np.abs(_run_onnx(fp32, graph.parity) - reference).max())
        if not fp32_diff <= tolerance:
            raise ExportParityError(
                f"export of {model_dir}: |ONNX - PyTorch| = {fp32_diff:.3g} > {tolerance:g} on "
                f"{len(reference)} real inputs; the graph is wrong, nothing was written"
            )
        fusion = None
        if fuse and graph.encoder_config is not None and not fp16:
            fused = _fuse_encoder(fp32, graph.encoder_config, work)
            if fused is not None:
                try:
                    fused_diff = float(np.abs(_run_onnx(fused[0], graph.parity) - reference).max())
                except Exception as err:  # a contrib op that this onnxruntime build cannot run
                    fused_diff, why = float("inf"), f"does not run ({err})"
                else:
                    why = f"is off by {fused_diff:.3g} > {tolerance:g}"
                if fused_diff <= tolerance:
                    (fp32, fusion), fp32_diff = fused, fused_diff
                else:
                    log.warning("fused graph of %s %s; exporting the plain graph", model_dir, why)
        chosen, precision, exact = fp32, "fp32", fp32
        smoothing, sensitivity, kept, weight_range = None, None, [], None
        reduce_range = dynamic_int8_reduce_range() if int8_reduce_range is None else int8_reduce_range
        if quantize == "int8-smooth":
            import onnx

            from rankwise.serving.smooth_quant import smooth_for_dynamic_int8

            smoothed = onnx.load(str(fp32))
            smoothing = smooth_for_dynamic_int8(smoothed, _calibration_feeds(graph, calibration_pairs))
            fp32 = work / "smoothed.onnx"
            onnx.save(smoothed, str(fp32), save_as_external_data=_has_external_data(work))
            smoothed_diff = float(np.abs(_run_onnx(fp32, graph.parity) - reference).max())
            if not smoothed_diff <= tolerance:
                raise ExportParityError(f"export of {model_dir}: the SmoothQuant-scaled fp32 graph is off by "
                                        f"{smoothed_diff:.3g} > {tolerance:g}; nothing was written")
        if quantize in ("int8", "int8-smooth") and not openvino_int8:
            import onnx

            from rankwise.serving.smooth_quant import weight_matmuls

            chosen, precision = work / "int8.onnx", quantize
            nodes = [n.name for n in weight_matmuls(onnx.load(str(fp32), load_external_data=False))]
            quantize_int8 = functools.partial(_quantize_dynamic_int8, reduce_range=reduce_range)
            weight_range = [-int8_weight_levels(reduce_range), int8_weight_levels(reduce_range)]
            if fp32_ops:
                from rankwise.serving.mixed_precision import int8_sensitivity, most_sensitive

                probe_pairs = list(calibration_pairs)[:: max(1, len(calibration_pairs) // SENSITIVITY_PAIRS)]
                sensitivity = int8_sensitivity(fp32, _calibration_feeds(graph, probe_pairs), nodes,
                                               quantize_int8, work)
                kept = most_sensitive(sensitivity, fp32_ops)
                precision = f"{quantize}+fp32x{len(kept)}"
            quantize_int8(fp32, chosen, [n for n in nodes if n not in kept])
        elif quantize == "int8-static":
            import onnx

            from rankwise.serving.smooth_quant import weight_matmuls

            if graph.make_feeds is None or graph.encoder_config is None:
                # the causal-LM prompt scorer's masked attention gives onnxruntime's calibrator NaN ranges
                raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} is not an encoder pair scorer; "
                                    "int8-static calibrates encoder cross-encoders (use --quantize int8)")
            chosen, precision = work / "int8-static.onnx", "int8-static"
            nodes = [n.name for n in weight_matmuls(onnx.load(str(fp32), load_external_data=False)) if n.op_type == "MatMul"]
            _quantize_static_int8(fp32, chosen, nodes, _calibration_feeds(graph, calibration_pairs))
        elif quantize == "int8-blockwise":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            chosen, precision = work / "int8-blockwise.onnx", "int8-blockwise"
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=BLOCKWISE_INT8_BLOCK,
                                             is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(chosen), _has_external_data(work))
        elif fp16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            chosen, precision = work / "fp16.onnx", "fp16"
            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(chosen))
        diff = fp32_diff if chosen is fp32 else float(np.abs(_run_onnx(chosen, graph.parity) - reference).max())
        openvino = None
        if runtime == "openvino":
            if graph.make_feeds is None:
                raise ModelDirError(f"{model_dir / 'rankwise.json'}: kind {kind!r} ({part}) is not a (query, doc) scorer; "
                                    "runtime='openvino' serves rerankers")
            openvino = _openvino_ir(plain, work, graph, reference, openvino_precision,
                                    calibration_pairs if openvino_int8 else None, weights_only=openvino_int8 and prompt_scorer,
                                    overflow_fix=reduce_range)
            if openvino_int8 and not prompt_scorer:
                weight_range = [-int8_weight_levels(reduce_range), int8_weight_levels(reduce_range)]
            diff = openvino["parity_max_abs_diff"]
            precision = ("int8-weights" if prompt_scorer else "int8") if openvino_int8 else "fp32"
        graph.save_assets(output_dir)
        _finalise(chosen, final)
        for name in ("openvino_model.xml", "openvino_model.bin"):
            (output_dir / name).unlink(missing_ok=True)
            if openvino is not None:
                os.replace(work / "openvino" / name, output_dir / name)
        for stale in (output_dir / HEAD_FILE, output_dir / (HEAD_FILE + ".data")):
            stale.unlink(missing_ok=True)
        if exact_head:
            _finalise(exact, output_dir / HEAD_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    from importlib.metadata import PackageNotFoundError, version

    try:
        rw_version = version("rankwise")
    except PackageNotFoundError:
        rw_version = "unknown"
    doc = {
        "format": "onnx",
        "kind": kind,
        "part": part,
        "onnx_file": ONNX_FILE,
        "inputs": names,
        "output": graph.output,
        "precision": precision,
        "fused_ops": fusion,
        **({"exact_head": {"k": exact_head, "onnx_file": HEAD_FILE, "precision": "fp32"}} if exact_head else {}),
        **({"smoothquant_alpha": smoothing} if smoothing is not None else {}),
        **({"int8_weight_range": weight_range} if weight_range is not None else {}),
        **({"fp32_ops": kept, "int8_sensitivity": sensitivity} if sensitivity is not None else {}),
        **({"runtime": "openvino", "openvino_file": "openvino_model.xml",
            **{k: v for k, v in openvino.items() if k != "parity_max_abs_diff"}} if openvino else {"runtime": "onnxruntime"}),
        "opset": opset,
        **graph.metadata,
        "parity_max_abs_diff": diff,
        "fp32_parity_max_abs_diff": fp32_diff,
        "parity_inputs": len(reference),
        "source": {k: v for k, v in meta.items() if k != "rankwise_version"},
        "rankwise_version": rw_version,
    }
    tmp = output_dir / (SERVING_JSON + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, output_dir / SERVING_JSON)
    log.info("exported %s (%s) to %s: max |ONNX - PyTorch| = %.3g", kind, precision, final, diff)
    served_by = f"openvino ({openvino['openvino_precision']})" if openvino else "onnxruntime"
    return ExportResult(output_dir, kind, precision, diff, fp32_diff, seconds, served_by)


def default_runtime(pair_scorer: bool, quantize: str | None = None, fp16: bool = False, exact_head: int = 0,
                    fp32_ops: int = 0) -> Literal["onnxruntime", "openvino"]:
    """The runtime ``export_model(runtime="auto")`` writes an export for.

    OpenVINO (bf16 where the CPU has it natively, else f32) for a (query, doc) scorer exported
    without quantisation, fp16, fp32 ops or an exact head, when ``openvino`` is installed: in
    ``benchmarks/serving_latency.py`` it is the fastest engine whose nDCG@10 stays within 0.005 of
    fp32. onnxruntime otherwise (recommender towers, the quantised and fp16 variants, which are
    onnxruntime's, and machines without OpenVINO). The export keeps ``model.onnx`` either way, and
    :class:`~serving.onnx_ranker.OnnxRanker` serves it with onnxruntime on CUDA.
    """
    import importlib.util

    plain = quantize is None and not fp16 and not exact_head and not fp32_ops
    return "openvino" if pair_scorer and plain and importlib.util.find_spec("openvino") is not None else "onnxruntime"


def _openvino_ir(onnx_path: Path, work: Path, graph: ExportGraph, reference: np.ndarray, precision: str,
                 calibration_pairs: Sequence[tuple[str, str]] | None, weights_only: bool = False,
                 overflow_fix: bool = False) -> dict[str, Any]:
    """OpenVINO IR of ``onnx_path`` in ``work/openvino``, its parity against PyTorch at the precision
    OpenVINO compiles for, and what ran.

    ``weights_only``: NNCF weight compression (int8 per output channel, asymmetric; activations stay
    at the precision hint), OpenVINO's recipe for LLMs and data-free; it also avoids a constant-folding
    failure of OpenVINO on the fully quantised shared-prefix ERank graph. Else, with
    ``calibration_pairs``, NNCF post-training int8 of weights and activations; ``overflow_fix``: NNCF's
    7-bit weights in every layer (``OverflowFix.ENABLE``), for CPUs without VNNI, whose int8 kernels
    saturate int16 pair sums with full-range weights."""
    import openvino as ov

    from rankwise.serving.openvino_runtime import OpenVINOSession

    model = ov.convert_model(str(onnx_path))
    quantization = None
    if weights_only or calibration_pairs is not None:
        import nncf

        quiet = logging.getLogger("nncf")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            if weights_only:
                model, quantization = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM), "nncf-int8-weights"
            else:
                feeds = _calibration_feeds(graph, calibration_pairs)
                from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

                advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE) if overflow_fix else None
                model = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                      advanced_parameters=advanced)
                quantization = "nncf-int8"
        finally:
            quiet.setLevel(level)
    ir = work / "openvino"  # its own folder: a .bin beside the ONNX graphs reads as external data
    ir.mkdir(exist_ok=True)
    ov.save_model(model, str(ir / "openvino_model.xml"), compress_to_fp16=False)
    session = OpenVINOSession(ir / "openvino_model.xml", precision=precision)
    feeds = {k: v.numpy() for k, v in graph.parity.items()}
    diff = float(np.abs(session.run(feeds).reshape(reference.shape) - reference).max())
    return {"openvino_precision": session.precision, "openvino_version": ov.__version__,
            "openvino_quantization": quantization, "parity_max_abs_diff": diff}
