"""The README's quick start and `.ci/run` stay the same commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.+?)\n\s*```", section, flags=re.S)]


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_them():
    install, tests = _quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    install_part = install.split(" && .venv/bin/rankwise ", 1)[0]
    assert install_part != install, "command 1 must also run the main job"
    assert install_part.replace(" -q", "") in ci.replace(" -q", "")
    assert tests in ci
