"""`rankwise eval beir|bright`: first stage + reranker + metrics."""

import typer

app = typer.Typer(help="Evaluate retrieval and reranking on BEIR and BRIGHT.", no_args_is_help=True)
