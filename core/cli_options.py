"""Options that several `rankwise` commands share, declared once so that their flag, help and checks agree.

``DeviceOpt`` is the ``--device`` of every command that runs a model: ``auto`` (CUDA when
``torch.cuda.is_available()``, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. It is checked while the
command line is parsed: an unknown name, or CUDA asked on a machine without it, is a one-line error
(exit 1) before any data or model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.outputs import OVERWRITE_HELP

__all__ = ["DEVICE_HELP", "DeviceOpt", "DataDirOpt", "OverwriteOpt", "checked_device"]

DEVICE_HELP = "auto (CUDA when available, else CPU), cuda, cuda:N or cpu."


def checked_device(value: str) -> str:
    """``value`` if :func:`rankwise.core.device.resolve_device` accepts it here; else a one-line error."""
    from rankwise.core.device import resolve_device

    try:
        resolve_device(value)
    except ValueError as err:
        fail(f"--device: {err}")
    return value


DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP, callback=checked_device)]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Where named datasets live (default $RANKWISE_DATA).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]
