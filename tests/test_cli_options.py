"""The shared ``--device`` option: every command that runs a model checks it the same way while parsing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rankwise.cli import app

runner = CliRunner()

COMMANDS = [  # each with its required flags; nothing here exists, so a command that got past --device would fail on them
    ["train", "cross-encoder", "--objective", "listnet", "--output", "{tmp}/o"],
    ["train", "erank", "--backbone", "{tmp}/missing", "--output", "{tmp}/o"],
    ["train", "listwise", "--backbone", "{tmp}/missing", "--output", "{tmp}/o"],
    ["train", "iranker", "--backbone", "{tmp}/missing", "--output", "{tmp}/o"],
    ["train", "rank-grpo", "--backbone", "{tmp}/missing", "--output", "{tmp}/o"],
    ["eval", "beir", "--dataset", "{tmp}/missing", "--output-dir", "{tmp}/o"],
    ["recommend", "train", "--dataset", "{tmp}/missing", "--model", "sasrec", "--output", "{tmp}/o"],
    ["rerank", "--model", "{tmp}/m", "--candidates", "{tmp}/c", "--corpus", "{tmp}/d", "--queries", "{tmp}/q", "--output", "{tmp}/o"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("device", ["tpu", "gpu:0"])
def test_unknown_device_is_a_one_line_error_before_anything_loads(tmp_path, command, device):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = runner.invoke(app, [*args, "--device", device])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: --device: unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"]
    assert not (tmp_path / "o").exists()
