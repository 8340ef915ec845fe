"""Health commands: `health list` (failing domains) and `health reset DOMAIN` (audited)."""

from __future__ import annotations

import click

from ..health.policy import STATES
from .context import cli_actor, current
from .output import emit_json, say, table, timestamp


@click.group("health")
def health_group() -> None:
    """Delivery health: domains held back cluster-wide (docs/health.md)."""


@health_group.command("list")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only this state.")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(state: str | None, limit: int, as_json: bool) -> None:
    """Failing domains (held back ones first by next attempt), read from Redis."""
    found = current().health().domains(state, limit)
    if as_json:
        emit_json({"domains": [h.to_json() for h in found]})
        return
    table(
        f"{len(found)} failing domains" + (f" ({state})" if state else ""),
        ["domain", "state", "failures", "failing since (UTC)", "periods", "next attempt (UTC)"],
        [
            (
                h.domain,
                h.state,
                h.consecutive_failures,
                timestamp(int(h.failing_since)) if h.failing_since else "",
                h.failure_periods,
                timestamp(int(h.next_attempt_at)) if h.next_attempt_at else "",
            )
            for h in found
        ],
    )


@health_group.command("reset")
@click.argument("domain")
def reset_command(domain: str) -> None:
    """Make DOMAIN healthy cluster-wide (audited when FEDTRACK_DATABASE_URL is set)."""
    context = current()
    previous = context.health().reset(domain, actor=cli_actor(), database=context.audit_database())
    say(f"{domain}: {previous or 'no health record'} -> healthy")


COMMANDS = [health_group]
