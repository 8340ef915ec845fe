"""Printing: rich tables for people, JSON for scripts, one-line errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    view = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(str(cell) for cell in row))
    console.print(view)


def say(message: str) -> None:
    console.print(message)


def timestamp(seconds: int | float | None) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
