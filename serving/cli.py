"""`rankwise export` and `rankwise rerank`: ONNX export and offline batch reranking."""

import typer

app = typer.Typer()
