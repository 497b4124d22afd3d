"""The `distillguard` command line: thin typer commands over the package's modules."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import typer
from rich.console import Console

app = typer.Typer(
    name="distillguard",
    help="Detect, stop and prove model distillation through an LLM API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    """Print a clear error (never a traceback) and exit."""
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the Exchange record (docs/exchange.schema.json is generated from it)."""
    from distillguard.exchange import json_schema

    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    sys.stdout.write("\n")


@app.command()
def formats() -> None:
    """List the log formats `scan` reads."""
    from distillguard.ingest import adapters

    for name, cls in sorted(adapters().items()):
        console.print(f"[bold]{name}[/]: {cls.description}")


# -- simulate (distillguard.simulate) -----------------------------------------------------------------
# -- scan / eval / demo (distillguard.detect, distillguard.eval) ---------------------------------------


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
