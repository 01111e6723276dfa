"""`rankwise models materialize`: turn packaged GGUF LLMs into HF directories."""

import typer

app = typer.Typer(help="Prepare model directories (e.g. materialise packaged GGUF LLMs).", no_args_is_help=True)
