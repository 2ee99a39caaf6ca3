"""The typer application: registers one thin module per command."""

from __future__ import annotations

import typer
from elasticir.cli import (
    calibrate,
    fuse,
    index,
    loadtest,
    models,
    profile,
    quickstart,
    rerank,
    search,
    serve,
    simulate,
    train,
)
from elasticir.cli import eval as eval_command

app = typer.Typer(
    name="elasticir",
    help="Dense retrieval and reranking with compute-elastic models: index a corpus, search "
    "it, rerank and fuse runs, evaluate them (TREC formats throughout), and train elastic models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help text: rich markup would swallow the "[default: ...]" notes in option help.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"elasticir {version('elasticir')}")
        except PackageNotFoundError:  # a source tree that is not installed
            typer.echo("elasticir (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the installed version and exit",
    ),
) -> None:
    """Dense retrieval and reranking with compute-elastic models."""


app.command("index")(index.main)
app.command("search")(search.main)
app.command("rerank")(rerank.main)
app.command("calibrate")(calibrate.main)
app.command("eval")(eval_command.main)
app.command("fuse")(fuse.main)
app.command("quickstart")(quickstart.main)
app.command("models")(models.main)
app.command("loadtest")(loadtest.main)
app.command("profile")(profile.main)
app.command("simulate")(simulate.main)
app.command("serve")(serve.main)
app.add_typer(train.app, name="train")


def main() -> None:
    app()
