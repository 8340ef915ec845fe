"""Stats commands: `stats` (per-domain table) and `status` (what stands out)."""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa

from ..anomalies import failure_ratio, indexed_anomalies
from ..errors import FedtrackError
from .context import current
from .output import emit_json, say, table, timestamp

SORTS = ("activity", "failures", "latency", "queued")


@click.command("stats")
@click.option("--sort", type=click.Choice(sorted(SORTS)), default="activity", show_default=True)
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_command(sort: str, limit: int, as_json: bool) -> None:
    """Per-domain delivery diagnostics, cluster-wide (read from Redis's indexes)."""
    shown, total = current().stats().page(sort, limit)
    if as_json:
        emit_json({"servers": [s.to_dict() for s in shown], "total": total})
        return
    table(
        f"{len(shown)} of {total} domains by {sort}",
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


def _plumbing() -> dict[str, Any]:
    """Engine, replicas and database identities (the database only when its URL is set)."""
    from ..cluster_status import describe
    from ..connections import database_engine
    from ..identity import database_id

    context = current()
    settings = context.settings
    this: str | None = None
    if settings.database_url:
        engine = database_engine(settings.database_url, pooled=False)
        try:
            this = database_id(engine)
        except (sa.exc.SQLAlchemyError, FedtrackError):
            this = None
        finally:
            engine.dispose()
    reader = context.stats()
    return describe(reader.engine, reader.keys, this, settings.database_id)


def _say_plumbing(plumbing: dict[str, Any]) -> None:
    nodes = plumbing.get("nodes", [])
    master = f", master {plumbing['master']}" if plumbing.get("master") else ""
    say(
        f"engine {plumbing.get('engine')}{master}: {len(nodes)} primary node(s);"
        f" replicas in sync: {'yes' if plumbing.get('replicas_in_sync') else 'NO'}"
        f" (wait_replicas={plumbing.get('wait_replicas', 0)})"
    )
    for node in nodes:
        state = "up" if node.get("up") else f"DOWN ({node.get('error')})"
        say(f"  {node.get('address')}: {state}, {node.get('replicas', 0)} replica(s)")
    database = plumbing.get("database", {})
    named = ", ".join(database.get("redis", [])) or "none recorded"
    this = database.get("this_database") or "unknown (no FEDTRACK_DATABASE_URL)"
    say(f"database: Redis holds data of {named}; this database is {this}")
    if database.get("missing_shards"):
        say(f"  shards not hydrated yet: {database['missing_shards']}")
    if database.get("mismatch"):
        say(f"  MISMATCH: {database['mismatch']}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """The engine and its replicas, the namespace's database identity, and traffic
    anomalies: failing domains, slow domains, queued backlog."""
    plumbing = _plumbing()
    reader = current().stats()
    sums = reader.totals()
    anomalies = indexed_anomalies(reader.engine, reader.keys, sums)
    totals = {
        "domains": sums["domains"],
        "queued_messages": sums["queued_messages"],
        "failures": sums["failed_http"] + sums["failed_https"] + sums["failed_smtp"],
        "successful_deliveries": sums["successful_deliveries"],
    }
    if as_json:
        emit_json(
            {"totals": totals, "anomalies": [a.__dict__ for a in anomalies], "cluster": plumbing}
        )
        return
    _say_plumbing(plumbing)
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
