"""Device and dtype names shared by every model-loading entry point.

One place turns the strings people type (``--device auto``, ``--dtype bf16``)
into torch objects, so rankers, trainers and benchmarks agree on what
``"auto"`` means and reject the same bad values with the same message.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_dtype("bf16")
    torch.bfloat16
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

__all__ = ["bf16_native", "cpu_has_vnni", "resolve_device", "resolve_dtype"]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``.

    Args:
        device: ``"auto"`` or ``None`` (CUDA when ``torch.cuda.is_available()``,
            else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.

    Returns:
        The resolved device.

    Raises:
        ValueError: the name is not a device torch knows, or CUDA was asked for
            on a machine without it.

    Example:
        >>> resolve_device(torch.device("cpu"))
        device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device.strip().lower())
        except RuntimeError as exc:
            raise ValueError(
                f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
    else:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available on this machine: "
            "use 'cpu' or 'auto'"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = "fp32") -> torch.dtype:
    """Turn a dtype name into a floating ``torch.dtype``.

    Args:
        dtype: ``"fp32"``/``"float32"`` (also ``None``), ``"bf16"``/``"bfloat16"``,
            ``"fp16"``/``"float16"``, or one of those ``torch.dtype`` objects.

    Returns:
        The resolved dtype.

    Raises:
        ValueError: any other name or dtype.

    Example:
        >>> resolve_dtype("float16")
        torch.float16
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
        raise ValueError(f"unsupported dtype {dtype!r}: use 'fp32', 'bf16' or 'fp16'")
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise ValueError(f"unknown dtype {dtype!r}: use 'fp32', 'bf16' or 'fp16'")


def bf16_native(device: str | torch.device | None = "auto") -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: CUDA with bf16 support (Ampere and
    later), or a CPU with AVX-512 BF16 or AMX (oneDNN's own check). Elsewhere torch emulates bf16, and
    a CPU training step under bf16 autocast is many times slower than in fp32, so ``dtype="auto"``
    choices should fall back to fp32 when this is ``False``."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether this x86-64 CPU has VNNI int8 dot products (``avx512_vnni`` or ``avx_vnni`` in
    ``/proc/cpuinfo``; ``cpuinfo`` replaces the file's text). Without VNNI, onnxruntime's u8 x s8
    kernels add pairs of 8-bit products into int16 (``vpmaddubsw``), which saturates for full-range
    int8 weights; onnxruntime's remedy is 7-bit weights (``reduce_range``). ``True`` off x86-64,
    where that kernel is not used, and where the flags cannot be read."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return True
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return flags is None or bool({"avx512_vnni", "avx_vnni"} & set(flags))
