"""`rankwise recommend train|eval|predict`: sequential recommenders."""

import typer

app = typer.Typer(help="Train, evaluate and query sequential recommenders.", no_args_is_help=True)
