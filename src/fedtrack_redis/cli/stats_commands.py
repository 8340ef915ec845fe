"""Stats commands: `stats` (per-domain table) and `status` (what stands out)."""

from __future__ import annotations

import click

from ..anomalies import failure_ratio, failures, find_anomalies
from ..stats import ServerStat
from .context import current
from .output import emit_json, say, table, timestamp

SORTS = {
    "activity": lambda s: (-s.last_active, s.domain),
    "failures": lambda s: (-failures(s), -failure_ratio(s), s.domain),
    "latency": lambda s: (-s.p95_ms, -s.mean_latency_ms, s.domain),
    "queued": lambda s: (-s.queued_messages, s.domain),
}


def _stats() -> list[ServerStat]:
    return current().stats().get_all()


@click.command("stats")
@click.option("--sort", type=click.Choice(sorted(SORTS)), default="activity", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_command(sort: str, limit: int, as_json: bool) -> None:
    """Per-domain delivery diagnostics, cluster-wide (read from Redis)."""
    stats = sorted(_stats(), key=SORTS[sort])
    shown = stats[:limit]
    if as_json:
        emit_json({"servers": [s.to_dict() for s in shown], "total": len(stats)})
        return
    table(
        f"{len(shown)} of {len(stats)} domains by {sort}",
        [
            "domain",
            "queued",
            "ok http/https/smtp",
            "fail http/https/smtp",
            "fail %",
            "inbound",
            "mean ms",
            "p95 ms",
            "last active (UTC)",
        ],
        [
            (
                s.domain,
                s.queued_messages,
                f"{s.success_http}/{s.success_https}/{s.success_smtp}",
                f"{s.failed_http}/{s.failed_https}/{s.failed_smtp}",
                f"{failure_ratio(s):.0%}",
                s.inbound_deliveries,
                f"{s.mean_latency_ms:.0f}",
                f"{s.p95_ms:.0f}",
                timestamp(s.last_active),
            )
            for s in shown
        ],
    )


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Traffic anomalies: failing domains, slow domains, queued backlog."""
    stats = _stats()
    anomalies = find_anomalies(stats)
    totals = {
        "domains": len(stats),
        "queued_messages": sum(s.queued_messages for s in stats),
        "failures": sum(failures(s) for s in stats),
        "successful_deliveries": sum(s.successful_deliveries for s in stats),
    }
    if as_json:
        emit_json({"totals": totals, "anomalies": [a.__dict__ for a in anomalies]})
        return
    say(
        f"{totals['domains']} domains, {totals['successful_deliveries']} deliveries,"
        f" {totals['failures']} failures, {totals['queued_messages']} queued"
    )
    if not anomalies:
        say("nothing stands out")
        return
    table(
        "anomalies", ["kind", "domain", "detail"], [(a.kind, a.domain, a.detail) for a in anomalies]
    )


COMMANDS = [stats_command, status_command]
