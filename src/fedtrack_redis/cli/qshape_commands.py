"""`qshape`: the cluster's in-flight messages per domain by age, in Postfix's layout."""

from __future__ import annotations

from collections.abc import Sequence

import click

from ..ages import COLUMNS
from ..qshape import DEFAULT_TOP, MAX_TOP, QShape
from .context import current
from .output import emit_json


def render_qshape(shape: QShape) -> list[str]:
    """The header, one line per domain, then ``TOTAL``; every column right-aligned (as
    Postfix's qshape prints it, so operators read it the same way)."""
    body: list[tuple[str, Sequence[int]]] = [*shape.rows, ("TOTAL", shape.total)]
    names = max(len(name) for name, _counts in body)
    widths = [
        max(len(header), *(len(str(counts[k])) for _name, counts in body))
        for k, header in enumerate(COLUMNS)
    ]

    def line(name: str, cells: Sequence[object]) -> str:
        columns = " ".join(
            str(cell).rjust(width) for cell, width in zip(cells, widths, strict=True)
        )
        return f"{name.rjust(names)} {columns}"

    return [line("", COLUMNS)] + [line(name, counts) for name, counts in body]


@click.command("qshape")
@click.option(
    "--top",
    type=click.IntRange(min=1, max=MAX_TOP),
    default=DEFAULT_TOP,
    show_default=True,
    help="Domains listed (largest T first, ties by name).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def qshape_command(top: int, as_json: bool) -> None:
    """In-flight messages per domain by age in minutes, cluster-wide: T, then under 5,
    [5, 10), … , 1280 or more; the TOTAL row covers every domain."""
    shape = current().stats().qshape(top)
    if as_json:
        emit_json(shape.to_dict())
        return
    for text in render_qshape(shape):
        click.echo(text)


COMMANDS = [qshape_command]
