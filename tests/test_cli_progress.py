"""`--json` output is one clean JSON line even when a library would draw a progress bar on stderr
(a pipe or a test runner may merge the two streams)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rankwise.cli import app
from rankwise.testing import tiny_cross_encoder_dir


def test_json_output_has_no_library_progress_bar_in_the_merged_streams(tmp_path):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as on a machine where nothing turned them off
    ce = tiny_cross_encoder_dir(tmp_path / "ce")
    res = CliRunner().invoke(app, ["export", "--model-dir", str(ce), "--output", str(tmp_path / "onnx"), "--json"])
    assert res.exit_code == 0, res.output
    assert "Loading weights" not in res.output and "%|" not in res.output, res.output
    assert json.loads(res.output)["kind"] == "cross-encoder"
    assert not hf_logging.is_progress_bar_enabled()
