"""How every command reports a user error: one clear line on stderr and an exit code, never a traceback."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print `error: msg` and exit with `code` (2: bad input or setup)."""
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)
