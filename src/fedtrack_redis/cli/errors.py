"""Exit codes of the CLI and the exception commands raise for bad input."""

from __future__ import annotations

import click

EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


class BadInput(click.ClickException):
    """Bad input found by a command itself (exit code 2, one line)."""

    exit_code = EXIT_BAD_INPUT
