"""How every `rankwise` command reports a user error: one line on stderr, exit code 1.

``rankwise --debug COMMAND ...`` (or ``RANKWISE_DEBUG=1``) also prints the traceback of the
exception being handled, for bug reports; without it no traceback reaches the user.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn

__all__ = ["fail", "set_debug"]

DEBUG_ENV = "RANKWISE_DEBUG"


def set_debug(on: bool) -> None:
    """Turn traceback printing on or off for this process (the ``--debug`` flag)."""
    if on:
        os.environ[DEBUG_ENV] = "1"
    else:
        os.environ.pop(DEBUG_ENV, None)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (first line only) on stderr and exit with code 1; with debug on,
    print the traceback of the exception being handled first."""
    import typer

    if os.environ.get(DEBUG_ENV) and sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stderr)
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(1)
