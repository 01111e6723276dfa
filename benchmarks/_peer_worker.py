"""sentence-transformers' own fast backends, served to ``serving_latency.py`` from a second virtual environment.

The peer library's ONNX and OpenVINO backends need ``optimum-onnx`` / ``optimum-intel``, whose
transformers pins conflict with rankwise's, so ``serving_latency.py`` runs this script with the
python of a separate venv (``--peer-venv``). It never imports rankwise.

Startup: loads the cross-encoder directory ``--model-dir`` with ``CrossEncoder(..., backend=B)`` for
each requested backend (logits, no activation), on ``--threads`` threads (torch threads,
onnxruntime ``intra_op_num_threads`` through ``model_kwargs["session_options"]``, OpenVINO
``ov_config["INFERENCE_NUM_THREADS"]``):

- ``onnx``: optimum's ONNX export, saved under ``<work>/st-onnx``;
- ``onnx-qint8``: ``export_dynamic_quantized_onnx_model(model, "avx512_vnni", <work>/st-onnx)``
  (dynamic int8, no calibration), loaded with ``file_name="onnx/model_qint8_avx512_vnni.onnx"``;
- ``openvino``: optimum-intel's OpenVINO export (OpenVINO's default inference precision on this CPU),
  saved under ``<work>/st-openvino``;
- ``openvino-qint8``: ``export_static_quantized_openvino_model`` (NNCF post-training static int8)
  calibrated on the (query, doc) pairs of ``--calibration`` (JSON lines of ``{"query": ..., "doc": ...}``),
  each given to the helper as the one text ``query [SEP] doc`` (it tokenizes single texts), through a
  local ``datasets`` directory since the helper's default calibration set is on the Hub.

A backend that fails to load or export is reported as skipped with the exception, the others go on.

Protocol (JSON lines; stdout carries nothing else, library output goes to stderr):
- first line out: ``{"ready": true, "versions": {package: version}, "backends": {name: {"ok": true, ...}
  or {"skipped": reason}}}``;
- request in: ``{"backend": name, "pairs": [[query, doc], ...]}`` -> reply ``{"scores": [...],
  "predict_s": seconds of the ``CrossEncoder.predict`` call}`` (or ``{"error": ...}``);
- ``{"cmd": "quit"}`` or end of input: exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

PACKAGES = ("sentence-transformers", "transformers", "torch", "optimum", "optimum-onnx", "optimum-intel",
            "onnxruntime", "openvino", "nncf", "datasets")
BACKENDS = ("onnx", "onnx-qint8", "openvino", "openvino-qint8")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text if len(text) <= 600 else text[:600] + " ..."


class Loader:
    """Loads (and exports) each backend of one cross-encoder directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.models: dict[str, object] = {}

    def _ce(self, path: str | Path, backend: str, **model_kwargs):
        import torch
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(path), backend=backend, max_length=self.args.max_length, device="cpu",
                            activation_fn=torch.nn.Identity(), local_files_only=True, model_kwargs=model_kwargs)

    def _onnx_kwargs(self, file_name: str | None = None) -> dict:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.args.threads
        options.inter_op_num_threads = 1
        kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
        return {**kwargs, "file_name": file_name} if file_name else kwargs

    def _ov_kwargs(self, file_name: str | None = None) -> dict:
        kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": str(self.args.threads)}}
        return {**kwargs, "file_name": file_name} if file_name else kwargs

    @staticmethod
    def _ov_precision(model) -> str:
        request = model.transformers_model.request
        compiled = request.get_compiled_model() if hasattr(request, "get_compiled_model") else request
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)

    def load(self, name: str) -> dict:
        """Load backend ``name`` into ``self.models``; returns its detail fields."""
        onnx_dir, ov_dir = self.work / "st-onnx", self.work / "st-openvino"
        if name == "onnx":
            model = self._ce(self.args.model_dir, "onnx", **self._onnx_kwargs())
            model.save_pretrained(str(onnx_dir))
            detail = {"file": "onnx/model.onnx"}
        elif name == "onnx-qint8":
            from sentence_transformers import export_dynamic_quantized_onnx_model

            if "onnx" not in self.models:
                raise RuntimeError("needs the onnx backend, which did not load")
            base = self._ce(onnx_dir, "onnx", **self._onnx_kwargs("onnx/model.onnx"))  # a copy: the served model stays as loaded
            export_dynamic_quantized_onnx_model(base, "avx512_vnni", str(onnx_dir))
            file = "onnx/model_qint8_avx512_vnni.onnx"
            model = self._ce(onnx_dir, "onnx", **self._onnx_kwargs(file))
            detail = {"file": file, "quantization": "export_dynamic_quantized_onnx_model(avx512_vnni): dynamic int8"}
        elif name == "openvino":
            model = self._ce(self.args.model_dir, "openvino", **self._ov_kwargs())
            model.save_pretrained(str(ov_dir))
            detail = {"file": "openvino/openvino_model.xml", "inference_precision": self._ov_precision(model)}
        elif name == "openvino-qint8":
            from optimum.intel import OVQuantizationConfig
            from sentence_transformers import export_static_quantized_openvino_model

            if "openvino" not in self.models:
                raise RuntimeError("needs the openvino backend, which did not load")
            if not self.args.calibration:
                raise RuntimeError("no --calibration texts (the helper's default calibration set is on the Hub)")
            calib = self.work / "st-calibration"
            calib.mkdir(parents=True, exist_ok=True)
            # NNCF quantizes the OpenVINO model it is given in place, so the helper gets a fresh copy of the
            # saved export, not the served ``openvino`` model
            base = self._ce(ov_dir, "openvino", **self._ov_kwargs("openvino/openvino_model.xml"))
            sep = base.tokenizer.sep_token
            pairs = [json.loads(line) for line in Path(self.args.calibration).read_text().splitlines() if line.strip()]
            texts = [f"{p['query']} {sep} {p['doc']}" for p in pairs]  # the helper tokenizes one text per sample
            (calib / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            export_static_quantized_openvino_model(
                base, OVQuantizationConfig(num_samples=len(texts)), str(ov_dir),
                dataset_name=str(calib), dataset_config_name="default", dataset_split="train", column_name="text")
            file = "openvino/openvino_model_qint8_quantized.xml"
            model = self._ce(ov_dir, "openvino", **self._ov_kwargs(file))
            detail = {"file": file, "inference_precision": self._ov_precision(model),
                      "quantization": f"export_static_quantized_openvino_model: NNCF static int8, {len(texts)} calibration texts query [SEP] doc"}
        else:
            raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
        self.models[name] = model
        return detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--work", required=True, help="folder for the exported models")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--calibration", default=None, help="JSON lines of {\"query\": ..., \"doc\": ...} calibrating openvino-qint8")
    args = parser.parse_args()

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr; stdout is the protocol

    def send(doc: dict) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    loader = Loader(args)
    status: dict[str, dict] = {}
    for name in [b for b in args.backends.split(",") if b]:
        try:
            status[name] = {"ok": True, **loader.load(name)}
        except Exception as exc:  # noqa: BLE001 - a failed backend becomes a skipped row, with its reason
            traceback.print_exc()
            status[name] = {"skipped": _reason(exc)}
    send({"ready": True, "versions": versions(), "torch_threads": torch.get_num_threads(), "backends": status})

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("cmd") == "quit":
            break
        try:
            model = loader.models[req["backend"]]
            pairs = [tuple(p) for p in req["pairs"]]
            t = time.perf_counter()
            scores = model.predict(pairs, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)
            dt = time.perf_counter() - t
            send({"scores": [float(s) for s in scores], "predict_s": dt})
        except Exception as exc:  # noqa: BLE001 - the bench reports it
            traceback.print_exc()
            send({"error": _reason(exc)})


if __name__ == "__main__":
    main()
