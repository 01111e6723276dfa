"""onnxruntime sessions for serving: provider choice, IO binding, threads, length buckets.

One :class:`OnnxSession` wraps one ``onnxruntime.InferenceSession``; onnxruntime documents
``InferenceSession.run`` as safe to call from many threads at once, so one session is shared by
every thread of a process (and, with Ray, one session per actor).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

__all__ = ["OnnxSession", "Device", "Runtime", "RUNTIMES", "serving_runtime", "bucket_batches", "pad_batch", "shared_prefix_length"]

log = logging.getLogger("rankwise.serving")

Device = Literal["auto", "cuda", "cpu"]
Runtime = Literal["auto", "onnxruntime", "openvino"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_noticed: set[str] = set()


def _notice_once(message: str) -> None:
    """Emit ``message`` as one warning line, once per process."""
    if message not in _noticed:
        _noticed.add(message)
        log.warning(message)


def shared_prefix_length(rows: Sequence[Sequence[int]], own: int = 1) -> int:
    """How many leading token ids every row shares, leaving each row at least ``own`` ids of its own.

    The split point of a prompt scorer's shared-prefix graph: ``rows[0][:P]`` runs once per batch and
    each ``row[P:]`` continues it; ``own`` is the number of positions the readout takes logits at
    (2 for ERank's integer readout: the answer's first digit and the one after "1"). ``0`` for no rows.
    """
    if not rows:
        return 0
    limit = max(0, min(len(r) for r in rows) - own)
    first = rows[0]
    cut = 0
    while cut < limit and all(r[cut] == first[cut] for r in rows):
        cut += 1
    return cut


def serving_runtime(meta: Mapping[str, object], runtime: Runtime, device: Device, directory: Path) -> Literal["onnxruntime", "openvino"]:
    """The runtime that serves an export directory (its ``serving.json`` is ``meta``).

    ``"auto"``: the runtime the export was written for (``meta["runtime"]``), except that an
    OpenVINO export is served by onnxruntime from its ``model.onnx`` when the device is CUDA
    (``"cuda"``, or ``"auto"`` with a CUDA-enabled onnxruntime): OpenVINO runs here on the CPU only.
    ``"onnxruntime"`` / ``"openvino"`` force one; forcing OpenVINO on an export without an IR is an
    error naming the directory.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    has_ir = meta.get("runtime") == "openvino" and bool(meta.get("openvino_file"))
    if runtime == "openvino" and not has_ir:
        raise ValueError(f"{directory}: no OpenVINO IR in this export (rankwise export --runtime openvino)")
    if runtime != "auto":
        return runtime
    if not has_ir:
        return "onnxruntime"
    if device == "cuda":
        return "onnxruntime"
    if device == "auto":
        import onnxruntime as ort

        if _CUDA in ort.get_available_providers():
            return "onnxruntime"
    return "openvino"


class OnnxSession:
    """An onnxruntime session that prefers CUDA and falls back to CPU with a one-line notice.

    On CUDA, inputs are copied once and the output is bound on the device through IO binding
    (``run_with_iobinding``), which avoids onnxruntime's per-call output allocation on the host.
    On CPU, plain ``run``. Graph optimisation is ``ORT_ENABLE_ALL`` in both cases.

    Args:
        path: the ``.onnx`` file.
        device: ``"auto"`` (CUDA when the installed onnxruntime can use it, else CPU), ``"cuda"``
            (same, but the fallback notice is always a warning) or ``"cpu"``.
        intra_op_threads: threads inside one operator (``0``/``None``: onnxruntime's default,
            one per physical core).
        inter_op_threads: threads across independent operators (only used by parallel execution).
        output_name: the output to return; default the graph's first output.

    Raises:
        ValueError: the file is missing or is not a loadable ONNX model (the message names it).

    Example:
        >>> sess = OnnxSession("onnx-dir/model.onnx", device="cpu", intra_op_threads=2)  # doctest: +SKIP
        >>> sess.run({"input_ids": ids, "attention_mask": mask})  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        output_name: str | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: ONNX file not found")
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"OnnxSession: device must be 'auto', 'cuda' or 'cpu', got {device!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads:
            options.inter_op_num_threads = int(inter_op_threads)
        options.log_severity_level = 3  # errors only: the fallback notice below is ours
        wants_cuda = device in ("auto", "cuda")
        cuda_built = _CUDA in ort.get_available_providers()
        providers = [_CUDA, _CPU] if wants_cuda and cuda_built else [_CPU]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise ValueError(f"{path}: cannot load ONNX model ({str(err).strip().splitlines()[0]})") from None
        self.device: Literal["cuda", "cpu"] = "cuda" if _CUDA in self._session.get_providers() else "cpu"
        if wants_cuda and self.device == "cpu":
            reason = "could not be initialised" if cuda_built else "is not in this onnxruntime build"
            _notice_once(f"rankwise: CUDAExecutionProvider {reason}; running on CPU")
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_name = output_name or self._session.get_outputs()[0].name
        self.path = path

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, best first."""
        return self._session.get_providers()

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on host arrays; inputs the graph does not take are dropped.

        Shapes: ``feeds[name]``: the graph's input shape; returns the output as float32 on the host.
        """
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        if self.device == "cuda":
            return self._run_io_binding(feeds, "cuda")
        out = self._session.run([self.output_name], dict(feeds))[0]
        return np.asarray(out, dtype=np.float32)

    def _run_io_binding(self, feeds: Mapping[str, np.ndarray], device_type: str) -> np.ndarray:
        """Inputs copied once, output allocated on ``device_type`` by onnxruntime, then copied back."""
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(self.output_name, device_type)
        self._session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)


def bucket_batches(lengths: Sequence[int], max_batch: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Group item indices into batches of similar length to limit padding.

    Items are sorted by length (stable), then cut into consecutive batches of at most
    ``max_batch`` items and, when given, at most ``max_tokens`` padded tokens
    (``len(batch) * longest``). Every index appears in exactly one batch.

    Shapes: ``lengths``: ``(N,)``; returns a list of index arrays whose sizes sum to ``N``.

    Example:
        >>> [b.tolist() for b in bucket_batches([5, 1, 4, 2], max_batch=2)]
        [[1, 3], [2, 0]]
    """
    if max_batch < 1:
        raise ValueError(f"bucket_batches: max_batch must be >= 1, got {max_batch}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < max_batch:
            if max_tokens is not None and (end - start + 1) * lengths[order[end]] > max_tokens:
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad_batch(
    rows: Sequence[Mapping[str, Sequence[int]]],
    pad_id: int,
    names: Sequence[str],
    side: Literal["right", "left"] = "right",
) -> dict[str, np.ndarray]:
    """Pad tokenised rows to the longest one; ``*input_ids`` with ``pad_id``, the rest with 0.

    ``side="left"`` keeps every row's last token in the last column (causal-LM readouts).

    Shapes: returns ``{name: (len(rows), longest) int64}``.
    """
    longest = max(len(r[names[0]]) for r in rows)
    out: dict[str, np.ndarray] = {}
    for name in names:
        fill = pad_id if name.endswith("input_ids") else 0
        arr = np.full((len(rows), longest), fill, dtype=np.int64)
        for i, r in enumerate(rows):
            n = len(r[name])
            if side == "left":
                arr[i, longest - n :] = r[name]
            else:
                arr[i, :n] = r[name]
        out[name] = arr
    return out
