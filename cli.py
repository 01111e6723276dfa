"""The `rankwise` command: one Typer app wiring the groups each package defines.

Each group lives beside the code it drives (``eval/cli.py``, ``train/cli.py``, ...); heavy
libraries are imported inside command bodies so ``--help`` stays fast.
"""

import typer

from rankwise.eval.cli import app as eval_app
from rankwise.rankers.cli import app as models_app
from rankwise.recsys.cli import app as recommend_app
from rankwise.serving.cli import app as serving_app
from rankwise.train.cli import app as train_ce_app
from rankwise.train.cli_llm import app as train_llm_app

app = typer.Typer(
    name="rankwise",
    help="LLM reranking and recommendation: first stage, rerankers, LLM rankers, recommenders, ONNX serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)



@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Print the traceback behind an error message (for bug reports).")) -> None:
    """LLM reranking and recommendation: first stage, rerankers, LLM rankers, recommenders, ONNX serving."""
    from rankwise.core.cli_errors import set_debug

    set_debug(debug)


train_app = typer.Typer(help="Train rerankers and LLM rankers.", no_args_is_help=True)
train_app.add_typer(train_ce_app)
train_app.add_typer(train_llm_app)

app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(recommend_app, name="recommend")
app.add_typer(models_app, name="models")
app.add_typer(serving_app)  # export, rerank

if __name__ == "__main__":
    app()
