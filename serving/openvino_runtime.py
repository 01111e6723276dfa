"""OpenVINO sessions for serving an exported graph on the CPU (Intel's inference runtime).

:class:`OpenVINOSession` has :class:`~rankwise.serving.runtime.OnnxSession`'s surface (``run(feeds)``,
``input_names``, ``device``), so :class:`~rankwise.serving.onnx_ranker.OnnxRanker` serves either. It
compiles an OpenVINO IR (``.xml`` + ``.bin``, written by ``rankwise export --runtime openvino``) with
an inference precision hint: ``bf16`` runs the matmuls in bfloat16 where the CPU has AVX-512 BF16 or
AMX (OpenVINO's own default there), ``f32`` keeps float32; an NNCF-quantised IR runs its int8 ops in
int8 either way. :attr:`OpenVINOSession.precision` is the precision OpenVINO reports it compiled
for, not the one asked for. A compiled model serves many threads, each with its own infer request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["OpenVINOSession", "PRECISIONS"]

PRECISIONS = ("bf16", "f32")


class OpenVINOSession:
    """A compiled OpenVINO model on the CPU.

    Args:
        path: the ``.xml`` IR (or an ``.onnx`` file, which OpenVINO also reads).
        precision: ``"bf16"`` or ``"f32"``: the ``INFERENCE_PRECISION_HINT``.
        threads: ``INFERENCE_NUM_THREADS`` (``None``: OpenVINO's default).
        output_name: the output to return; default the first.

    Raises:
        ValueError: a missing or unloadable file, or another precision (the message names it).
    """

    def __init__(self, path: str | Path, precision: str = "bf16", threads: int | None = None, output_name: str | None = None) -> None:
        import openvino as ov

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: OpenVINO model file not found")
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINOSession: precision must be one of {PRECISIONS}, got {precision!r}")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses with long messages
            raise ValueError(f"{path}: cannot compile with OpenVINO ({str(err).strip().splitlines()[0]})") from None
        self.precision: str = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self.output_name = output_name or self._compiled.output(0).get_any_name()
        self._output = self._compiled.output(self.output_name)
        self.device: Literal["cpu"] = "cpu"
        self.path = path
        self._local = threading.local()

    @property
    def providers(self) -> list[str]:
        """What runs the graph (the counterpart of onnxruntime's providers)."""
        return [f"OpenVINO CPU ({self.precision})"]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on host arrays (inputs the graph does not take are dropped); float32 out."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items() if k in self.input_names})
        return np.asarray(result[self._output], dtype=np.float32)
