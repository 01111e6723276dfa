"""Progress bars of the libraries rankwise calls (transformers' "Loading weights", huggingface_hub's
downloads and shard writes).

They go to stderr, which a pipe or a test runner may merge with the one JSON line that ``--json``
prints on stdout, so every command turns them off when its output is for a program: ``--json`` or
stderr not a terminal. Only ever turns them off: a user who turned them off keeps them off.
"""

from __future__ import annotations

import os
import sys

__all__ = ["quiet_library_progress"]


def quiet_library_progress(machine_output: bool) -> None:
    """Silence Hugging Face progress bars for this process when ``machine_output`` is set or stderr
    is not a terminal; otherwise leave them as they are."""
    if not machine_output and sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub at import
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:  # transformers copies the flag at import: set its copy too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
