"""History commands: `history` (a series as a table), `watch` / `unwatch` (keep a
domain's history whatever its activity) and `watched` (docs/history.md)."""

from __future__ import annotations

import click

from ..history import FIVE, MINUTE, WINDOWS, HistoryBucket
from .context import current
from .output import emit_json, say, table, timestamp


def _failures(bucket: HistoryBucket) -> int:
    return bucket.failed_http + bucket.failed_https + bucket.failed_smtp


def _mean(latency: int, deliveries: int) -> str:
    return f"{latency / deliveries:.0f}" if deliveries else "-"


@click.command("history")
@click.argument("domain", required=False)
@click.option(
    "--window", type=click.Choice(list(WINDOWS)), default="1h", show_default=True, help="Span."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
def history_command(domain: str | None, window: str, as_json: bool) -> None:
    """The cluster's (or DOMAIN's) event counts per bucket, oldest first, ending with the
    current bucket: 1-minute buckets for the cluster's 1h and 24h, 5-minute otherwise."""
    from ..domain import normalize_domain

    name = normalize_domain(domain) if domain is not None else None
    buckets = current().stats().history(name, window)
    width = FIVE if name is not None or window == "7d" else MINUTE
    if as_json:
        emit_json(
            {
                "window": window,
                "width": width,
                "domain": name,
                "buckets": [b.to_dict() for b in buckets],
            }
        )
        return
    rows: list[tuple[object, ...]] = [
        (
            timestamp(b.start),
            b.successful_deliveries,
            _failures(b),
            f"{b.success_http}/{b.success_https}/{b.success_smtp}",
            f"{b.failed_http}/{b.failed_https}/{b.failed_smtp}",
            b.inbound_deliveries,
            _mean(b.total_latency_ms, b.successful_deliveries),
        )
        for b in buckets
    ]
    delivered = sum(b.successful_deliveries for b in buckets)
    rows.append(
        (
            "TOTAL",
            delivered,
            sum(_failures(b) for b in buckets),
            "/".join(str(sum(getattr(b, f"success_{t}") for b in buckets)) for t in TRANSPORTS),
            "/".join(str(sum(getattr(b, f"failed_{t}") for b in buckets)) for t in TRANSPORTS),
            sum(b.inbound_deliveries for b in buckets),
            _mean(sum(b.total_latency_ms for b in buckets), delivered),
        )
    )
    table(
        f"{name or 'cluster'}, last {window} in {width // 60}-minute buckets",
        [
            "start (UTC)",
            "delivered",
            "failed",
            "ok http/https/smtp",
            "fail http/https/smtp",
            "inbound",
            "mean ms",
        ],
        rows,
    )


TRANSPORTS = ("http", "https", "smtp")


@click.command("watch")
@click.argument("domain")
def watch_command(domain: str) -> None:
    """Keep DOMAIN's history whatever its activity."""
    from ..domain import normalize_domain

    name = normalize_domain(domain)
    changed = current().stats().watch(name)
    say(f"watching {name}" if changed else f"{name} was already watched")


@click.command("unwatch")
@click.argument("domain")
def unwatch_command(domain: str) -> None:
    """Stop watching DOMAIN (its kept buckets age out)."""
    from ..domain import normalize_domain

    name = normalize_domain(domain)
    changed = current().stats().unwatch(name)
    say(f"stopped watching {name}" if changed else f"{name} was not watched")


@click.command("watched")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def watched_command(as_json: bool) -> None:
    """The domains operators watch."""
    domains = current().stats().watched()
    if as_json:
        emit_json({"domains": domains})
        return
    for name in domains:
        click.echo(name)


COMMANDS = [history_command, watch_command, unwatch_command, watched_command]
