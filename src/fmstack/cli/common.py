"""What every command shares: the consoles, the progress bar for model files, and the user-error exit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from fmstack.core.errors import FmstackError

console = Console()
err = Console(stderr=True)


@contextmanager
def preparing(name: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar while a model's files are joined or hashed (minutes for a large model, once)."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(f"preparing {name}", *columns, console=console, transient=True) as bar:
        task = bar.add_task(name, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def fail(exc: FmstackError) -> NoReturn:
    """A user's mistake: one clear line on stderr and exit code 2, never a traceback."""
    err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    raise typer.Exit(2)
