"""`rankwise train cross-encoder ...`: trained rerankers (issue: objectives)."""

import typer

app = typer.Typer()
