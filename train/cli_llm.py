"""`rankwise train erank|listwise|iranker|rank-grpo ...`: LLM rankers."""

import typer

app = typer.Typer()
