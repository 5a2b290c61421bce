"""What every command shares: the consoles, the store, the user-error exit, and one way to print results (a table
for people, `--json` for scripts, from the same result objects)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Column, Table
from typer.core import TyperGroup

from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import FmstackError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

console = Console()
err = Console(stderr=True)

JSON = typer.Option(False, "--json", help="Print JSON (for scripts) instead of a table.")


def fail(exc: FmstackError) -> NoReturn:
    """A user's mistake: one clear line on stderr and exit code 2, never a traceback."""
    err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    raise typer.Exit(2)


class _UserErrors(TyperGroup):
    """Runs a group's commands so that a `FmstackError` from any of them (or from the library under it) ends the
    command with `fail`: commands raise, and none of them catches."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FmstackError as exc:
            fail(exc)


def command_group(help: str, **options: Any) -> typer.Typer:
    """A `typer.Typer` whose commands turn user errors into one line and exit code 2 (see `_UserErrors`)."""
    return typer.Typer(help=help, cls=_UserErrors, **options)


def store(settings: Settings | None = None) -> sessionmaker:
    """The configured store, migrated: the one place commands open it."""
    from fmstack.core.store import open_store

    return open_store(settings or get_settings())


@contextmanager
def preparing(name: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar while a model's files are joined or hashed (minutes for a large model, once)."""
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(f"preparing {name}", *columns, console=console, transient=True) as bar:
        task = bar.add_task(name, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@dataclass(frozen=True)
class Col:
    """A table column: its header and how one result object reads in it."""

    header: str
    cell: Callable[[Any], str]
    no_wrap: bool = False


def show_rows(rows: Sequence[Any], columns: Sequence[Col], as_json: bool, *, numbered: bool = False) -> None:
    """Result objects as a table for people (`numbered`: with a "#" column first), or with `--json` as a JSON list
    for scripts: both from the same objects, so the two views cannot disagree."""
    if as_json:
        print_json(rows)
        return
    table = Table(*(["#"] if numbered else []), *(Column(c.header, no_wrap=c.no_wrap) for c in columns))
    for i, row in enumerate(rows, 1):
        table.add_row(*([str(i)] if numbered else []), *(c.cell(row) for c in columns))
    console.print(table)


def print_json(data: Any) -> None:
    """JSON alone on stdout (progress and errors go elsewhere), so `fmstack … --json | jq` always parses."""
    print(json.dumps(jsonable(data), indent=2, ensure_ascii=False))


def jsonable(value: Any) -> Any:
    """Plain JSON data from a result: a type's own `to_dict()`/`as_dict()` (the HTTP API's shape) where it has one,
    else its dataclass fields. NaN (the mean of nothing) becomes null, which strict JSON readers accept."""
    for method in ("to_dict", "as_dict"):
        if callable(convert := getattr(value, method, None)):
            return jsonable(convert())
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
