"""Health state changes, from the shards' event streams into the database (the history),
and the webhook deliveries they call for. The flusher leader does this (`webhooks`).

Each stream entry becomes one row of ``federation_health_events`` with the id
``<shard>-<stream id>`` and one row per configured URL in
``federation_webhook_deliveries``, in one transaction; the shard's cursor (the last
copied stream id, in its ``healthmeta`` hash) moves only after the commit, so a leader
that dies in between copies the same entries again, and the ids make that a no-op.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from ..engine import RedisEngine
from ..keys import NamespaceKeys, ShardKeys
from ..stats import COUNTER_FIELDS, FIELD_OF
from ..store.schema import federation_health_events, federation_webhook_deliveries

#: Stream entries read per shard per round.
PAGE = 500
#: Most state changes one domain's history shows (the newest of its window).
MARKS = 200


def event_payload(shard: int, stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The webhook body of one stream entry: ``{id, domain, from, to, at, stats}``."""
    raw = fields.get("stats", "")
    parts = raw.split("\t") if raw else []
    counters = dict(zip(parts[::2], parts[1::2], strict=False))
    stats: dict[str, Any] = {
        name: int(counters.get(FIELD_OF[name], 0) or 0)
        for name in (*COUNTER_FIELDS, "queued_messages")
    }
    count = int(fields.get("count", 0) or 0)
    since = int(fields.get("since", 0) or 0)
    upcoming = int(fields.get("next", 0) or 0)
    stats.update(
        consecutive_failures=count,
        failing_since=since / 1000 if count else None,
        next_attempt_at=upcoming / 1000 if fields.get("to") != "healthy" else None,
        failure_periods=int(fields.get("periods", 0) or 0),
    )
    return {
        "id": f"{shard:02d}-{stream_id}",
        "domain": fields.get("domain", ""),
        "from": fields.get("from", ""),
        "to": fields.get("to", ""),
        "at": int(fields.get("at", 0) or 0),
        "stats": stats,
    }


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def copy_events(engine: RedisEngine, keys: NamespaceKeys, db: sa.Engine, urls: list[str]) -> int:
    """Copy new stream entries of every shard into the database; how many."""
    copied = 0
    for shard in keys.shards:
        copied += _copy_shard(engine, shard, db, urls)
    return copied


def _copy_shard(engine: RedisEngine, shard: ShardKeys, db: sa.Engine, urls: list[str]) -> int:
    client = engine.node_for(shard.base)
    cursor = _text(client.hget(shard.health_meta, "cursor")) or "0-0"
    entries = client.xrange(shard.health_events, min=f"({cursor}", count=PAGE)
    if not entries:
        return 0
    payloads = [
        event_payload(
            shard.shard, _text(sid), {_text(k): _text(v) for k, v in (fields or {}).items()}
        )
        for sid, fields in entries
    ]
    with db.begin() as connection:
        _insert_new(
            connection,
            federation_health_events,
            [
                {
                    "id": p["id"],
                    "domain": p["domain"],
                    "from_state": p["from"],
                    "to_state": p["to"],
                    "at": p["at"],
                    "payload": p,
                }
                for p in payloads
            ],
        )
        _insert_new(
            connection,
            federation_webhook_deliveries,
            [
                {
                    "event_id": p["id"],
                    "url": url,
                    "created_at": p["at"],
                    "attempts": 0,
                    "next_at": 0.0,
                }
                for p in payloads
                for url in urls
            ],
        )
    client.hset(shard.health_meta, "cursor", _text(entries[-1][0]))
    return len(entries)


def domain_changes(
    db: sa.Engine, domain: str, since: int, limit: int = MARKS
) -> list[dict[str, Any]]:
    """`domain`'s state changes at or after `since` (unix seconds), oldest first: the
    newest `limit` of them, from the database copy (indexed by domain and time)."""
    table = federation_health_events
    query = (
        sa.select(table.c.at, table.c.from_state, table.c.to_state)
        .where(table.c.domain == domain, table.c.at >= since)
        .order_by(table.c.at.desc(), table.c.id.desc())
        .limit(limit)
    )
    with db.connect() as connection:
        rows = connection.execute(query).all()
    return [{"at": int(at), "from": old, "to": new} for at, old, new in reversed(rows)]


def _insert_new(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows`, skipping those whose primary key is there already (a second copy)."""
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        connection.execute(pg_insert(table).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        connection.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - the project supports the two above
        for row in rows:
            exists = connection.execute(
                sa.select(sa.literal(1))
                .select_from(table)
                .where(*(column == row[column.name] for column in table.primary_key))
            ).first()
            if exists is None:
                connection.execute(sa.insert(table).values(**row))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
