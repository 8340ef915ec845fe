"""Exit codes of the CLI and the exception commands raise for bad input."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


class BadInput(click.ClickException):
    """Bad input found by a command itself (exit code 2, one line)."""

    exit_code = EXIT_BAD_INPUT


#: The top-level modules each extra brings (``fedtrack-redis[server]``, ``[demo]``).
EXTRAS = {
    "server": ("fastapi", "uvicorn", "starlette", "pydantic"),
    "demo": ("fastapi", "uvicorn", "starlette", "pydantic", "fakeredis", "lupa"),
}


@contextlib.contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Turn the import error of a module `extra` brings into one line naming the extra."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXTRAS[extra]:
            raise
        raise BadInput(
            f"{what} needs the {extra!r} extra ({missing} is not installed):"
            f" pip install 'fedtrack-redis[{extra}]'"
        ) from None
