"""Entry point of ``fedtrack``: global options backed by the ``FEDTRACK_*`` environment variables,
and the mapping of errors to exit codes (2 bad input, 1 service unreachable, 3 refused).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click
import redis
import sqlalchemy as sa

from ..config import DEFAULT_REDIS_URL, Settings
from ..errors import (
    BackendUnavailableError,
    ConfigurationError,
    FedtrackError,
    InvalidDomainError,
    InvalidImportError,
    InvalidPolicyError,
    InvalidTransportError,
    InvalidWindowError,
)
from ..redact import driver_errors, redact_url, unavailable_reason
from .context import CliContext
from .errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--redis-url",
    envvar="FEDTRACK_REDIS_URL",
    default=DEFAULT_REDIS_URL,
    show_default=True,
    help="Redis URL [env FEDTRACK_REDIS_URL]",
)
@click.option(
    "--database-url",
    envvar="FEDTRACK_DATABASE_URL",
    default="",
    help="SQLAlchemy URL of the namespace's database; commands that need it fail without"
    " it [env FEDTRACK_DATABASE_URL]",
)
@click.option(
    "--namespace",
    envvar="FEDTRACK_NAMESPACE",
    default="default",
    show_default=True,
    help="Cluster namespace in Redis [env FEDTRACK_NAMESPACE]",
)
@click.option(
    "--local-domain",
    envvar="FEDTRACK_LOCAL_DOMAIN",
    default="",
    help="This server's own domain, always allowed [env FEDTRACK_LOCAL_DOMAIN]",
)
@click.option(
    "--log-level",
    envvar="FEDTRACK_LOG_LEVEL",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Logging verbosity",
)
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str,
    database_url: str,
    namespace: str,
    local_domain: str,
    log_level: str,
) -> None:
    """fedtrack: cluster-wide federation policy and delivery diagnostics.

    Every option can also be set through the environment variable named in its help.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = {
        "FEDTRACK_REDIS_URL": redis_url,
        "FEDTRACK_DATABASE_URL": database_url,
        "FEDTRACK_NAMESPACE": namespace,
        "FEDTRACK_LOCAL_DOMAIN": local_domain,
    }
    from os import environ

    for name in (
        "FEDTRACK_PUSH_INTERVAL",
        "FEDTRACK_FLUSH_INTERVAL",
        "FEDTRACK_ADMIN_TOKEN",
        "FEDTRACK_ADMIN_TOKENS",
        "FEDTRACK_DATABASE_ID",
        "FEDTRACK_REDIS_WAIT_REPLICAS",
    ):
        if name in environ:
            env[name] = environ[name]
    settings = Settings.from_env(env)
    if isinstance(ctx.obj, _Seen):
        ctx.obj.settings = settings
    context = CliContext(settings)
    ctx.obj = context
    ctx.call_on_close(context.close)


def _register_commands() -> None:
    from . import (
        health_commands,
        history_commands,
        policy_commands,
        qshape_commands,
        rule_commands,
        service_commands,
        stats_commands,
        transfer_commands,
    )

    for module in (
        policy_commands,
        rule_commands,
        transfer_commands,
        stats_commands,
        qshape_commands,
        service_commands,
        health_commands,
        history_commands,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and an exit code.

    No line carries a password (URLs are redacted) or a driver's message (it can quote
    connection parameters): a service that does not answer is named by our own words,
    the driver exception's class name and the service's redacted URL.
    """
    seen = _Seen()
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="fedtrack",
            standalone_mode=False,
            obj=seen,
        )
    except click.exceptions.Abort:
        _fail("aborted", EXIT_UNAVAILABLE)
    except click.ClickException as exc:
        hint = " (see fedtrack --help)" if isinstance(exc, click.UsageError) else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except (
        ConfigurationError,
        InvalidDomainError,
        InvalidImportError,
        InvalidPolicyError,
        InvalidTransportError,
        InvalidWindowError,
    ) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except (BackendUnavailableError, redis.ConnectionError, redis.TimeoutError) as exc:
        _fail(f"service unavailable: {unavailable_reason(exc)}{seen.where(exc)}", EXIT_UNAVAILABLE)
    except redis.RedisError as exc:
        _fail(f"Redis error ({type(exc).__name__}){seen.where(exc)}", EXIT_UNAVAILABLE)
    except sa.exc.SQLAlchemyError as exc:
        down = isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
        label = "database unavailable" if down else "database error"
        _fail(f"{label} ({_class_name(exc)}){seen.where(exc)}", EXIT_UNAVAILABLE)
    except FedtrackError as exc:
        _fail(unavailable_reason(exc) if driver_errors(exc) else str(exc), EXIT_UNAVAILABLE)
    else:
        sys.exit(code if isinstance(code, int) else 0)


@dataclass
class _Seen:
    """What `main` learns of the run for its error line: the validated settings."""

    settings: Settings | None = None

    def where(self, exc: BaseException) -> str:
        """`` at <redacted URL>`` of the service whose driver failed, if known."""
        if self.settings is None:
            return ""
        for driver in driver_errors(exc):
            if isinstance(driver, sa.exc.SQLAlchemyError):
                return f" at {redact_url(self.settings.database_url or '')}"
            if isinstance(driver, redis.RedisError):
                return f" at {redact_url(self.settings.redis_url)}"
        return ""


def _class_name(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)  # the DBAPI error a DBAPIError wraps
    return type(orig).__name__ if isinstance(orig, BaseException) else type(exc).__name__


def _fail(message: str, code: int) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    click.echo(f"fedtrack: error: {redact_url(first_line)}", err=True)
    sys.exit(code)
