"""SQL of the per-domain stats: the flusher's UPSERT, the fencing token, the hydrator's reads.

Rows travel between Redis and the database as **stats lines**, one text line per domain,
tab-separated, in `LINE_COLUMNS` order::

    domain  queued_messages … total_latency_ms  last_active  latency_histogram

``last_active`` is unix seconds (``\\N`` when unknown) and ``latency_histogram`` is the
column's own format: comma-separated ``bucket:count`` pairs in increasing bucket order,
zero counts left out (``"0:3,17:12,40:1"``; empty when there are none). A stats line is
exactly a row of PostgreSQL's ``COPY … (FORMAT text)``: the flusher builds them from the
Redis hashes (`line_from_hash`), COPYs them into a staging table, and the hydrator
reads them back with ``COPY (SELECT …) TO STDOUT``. Domains, integers and histograms
never contain a tab, a newline or a backslash, so no escaping is needed.

On SQLite (small installs) the same lines are parsed and written with a plain
SQLAlchemy ``executemany`` UPSERT.
"""

from __future__ import annotations

import datetime as dt
import io
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import FencedOutError
from ..stats import FIELD_OF, MAX_BUCKET
from .schema import (
    COUNTER_COLUMNS,
    federation_flusher,
    federation_push_acks,
    federation_server_stats,
)

#: Columns of a stats line, in order.
LINE_COLUMNS: tuple[str, ...] = ("domain", *COUNTER_COLUMNS, "last_active", "latency_histogram")
NULL = "\\N"
#: Rows per COPY + INSERT statement pair, so that each statement stays well inside the
#: flusher's ``statement_timeout``.
COPY_BATCH = 50_000
#: Rows per batch of a `StatsWriter`.
WRITER_BATCH = 5_000
#: Acks per INSERT statement (4 parameters each; PostgreSQL allows 65,535, SQLite 32,766).
ACKS_BATCH = 2_000

_stats = federation_server_stats.c
_acks = federation_push_acks.c
_flusher = federation_flusher.c
_UTC = dt.UTC


# -- the histogram column ---------------------------------------------------------------


def encode_histogram(buckets: Mapping[int, int]) -> str:
    """``{17: 12, 0: 3}`` → ``"0:3,17:12"`` (zero counts dropped)."""
    return ",".join(f"{bucket}:{count}" for bucket, count in sorted(buckets.items()) if count)


def decode_histogram(text: str) -> dict[int, int]:
    """Inverse of `encode_histogram`; tolerant of an empty string."""
    buckets: dict[int, int] = {}
    for pair in text.split(","):
        if pair:
            bucket, _, count = pair.partition(":")
            buckets[int(bucket)] = buckets.get(int(bucket), 0) + int(count)
    return buckets


# -- stats lines ----------------------------------------------------------------------------


def parse_line(line: str) -> dict[str, Any]:
    """A stats line as a row dict for SQLAlchemy (``last_active`` as an aware datetime)."""
    parts = line.split("\t")
    if len(parts) != len(LINE_COLUMNS):
        raise ValueError(f"malformed stats line {line!r}")
    row: dict[str, Any] = {"domain": parts[0]}
    for name, value in zip(COUNTER_COLUMNS, parts[1:-2], strict=True):
        row[name] = int(value)
    seconds = parts[-2]
    row["last_active"] = (
        None if seconds in (NULL, "", "0") else dt.datetime.fromtimestamp(int(seconds), _UTC)
    )
    row["latency_histogram"] = parts[-1]
    return row


#: What a domain hash's field is in a stats line: a counter's column (0..), ``last_active``
#: (-1), or a latency bucket (`_BUCKET` + its number). One lookup per field.
_BUCKET = 1000
_FIELD_CODES: dict[str, int] = {FIELD_OF[name]: index for index, name in enumerate(COUNTER_COLUMNS)}
_FIELD_CODES[FIELD_OF["last_active"]] = -1
_FIELD_CODES.update({f"h{bucket}": _BUCKET + bucket for bucket in range(MAX_BUCKET + 1)})


def line_from_hash(domain: str, fields: str) -> str:
    """The stats line of a domain hash given as ``HGETALL`` joined by tabs (fields named
    by `stats.FIELD_OF`; fields other than the counters, the last activity and
    ``h<bucket>`` are ignored)."""
    parts = iter(fields.split("\t"))
    counters = ["0"] * len(COUNTER_COLUMNS)
    last_active = NULL
    histogram: list[tuple[int, str]] = []
    code_of = _FIELD_CODES.get
    for name, value in zip(parts, parts, strict=False):
        code = code_of(name)
        if code is None:
            continue
        if code >= _BUCKET:
            if value != "0":
                histogram.append((code - _BUCKET, value))
        elif code >= 0:
            counters[code] = value
        elif value != "0":
            last_active = value
    histogram.sort()
    buckets = ",".join([f"{bucket}:{count}" for bucket, count in histogram])
    return f"{domain}\t{chr(9).join(counters)}\t{last_active}\t{buckets}"


def format_line(row: Mapping[str, Any]) -> str:
    """Inverse of `parse_line` (``last_active`` may be a datetime, naive = UTC, or None)."""
    last_active = row.get("last_active")
    if last_active is None:
        seconds = NULL
    else:
        if last_active.tzinfo is None:  # SQLite hands timestamps back without a zone
            last_active = last_active.replace(tzinfo=_UTC)
        seconds = str(int(last_active.timestamp()))
    counters = "\t".join(str(int(row.get(name) or 0)) for name in COUNTER_COLUMNS)
    return f"{row['domain']}\t{counters}\t{seconds}\t{row.get('latency_histogram') or ''}"


# -- fencing (G4) --------------------------------------------------------------------------


def set_timeouts(connection: sa.Connection, seconds: float) -> None:
    """Bound this transaction with PostgreSQL's own timeouts (no-op on SQLite).

    A flusher frozen inside its transaction loses its session after `seconds` idle, so
    its row lock on the fencing token never blocks a new leader for long, and its late
    COMMIT fails.
    """
    if connection.dialect.name != "postgresql":
        return
    millis = max(1, int(seconds * 1000))
    for setting in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
        connection.exec_driver_sql(f"SET LOCAL {setting} = {millis}")


def bump_fence(connection: sa.Connection) -> int:
    """Take the next fencing token (locks the token row until the transaction ends)."""
    statement = (
        sa.update(federation_flusher)
        .where(_flusher.id == 1)
        .values(fence=_flusher.fence + 1)
        .returning(_flusher.fence)
    )
    fence = connection.execute(statement).scalar_one_or_none()
    if fence is None:  # a database whose token row was deleted by hand
        connection.execute(sa.insert(federation_flusher).values(id=1, fence=1))
        return 1
    return int(fence)


def check_fence(connection: sa.Connection, fence: int) -> None:
    """First statement of every flush: raise `FencedOutError` unless `fence` is the newest.

    The no-op UPDATE locks the token row until commit, so a newer leader's `bump_fence`
    waits for this transaction, and this transaction cannot commit after a newer token
    was taken.
    """
    statement = (
        sa.update(federation_flusher)
        .where(_flusher.id == 1, _flusher.fence == fence)
        .values(fence=_flusher.fence)
    )
    if connection.execute(statement).rowcount != 1:
        raise FencedOutError(f"fencing token {fence} is no longer the newest")


def current_fence(connection: sa.Connection) -> int:
    value = connection.execute(
        sa.select(_flusher.fence).where(_flusher.id == 1)
    ).scalar_one_or_none()
    return int(value or 0)


# -- flush: UPSERT absolute values -------------------------------------------------------------


def upsert_stats(connection: sa.Connection, lines: Sequence[str], *, method: str = "auto") -> int:
    """Write stats lines as absolute values; return the number of rows written.

    ``method``: ``copy`` (PostgreSQL only: COPY into a temporary table, then one
    ``INSERT … ON CONFLICT DO UPDATE``), ``executemany`` (SQLAlchemy Core), or ``auto``
    (COPY on PostgreSQL, whatever the size, executemany on SQLite).

    The COPY path inserts each batch in name order: a batch's new rows then lie in the
    table as the name filter's prefixes group them (`store.search`); at a million domains
    a prefix matching 111,111 rows was sorted in 57 ms instead of 250 ms, and the flush
    was no slower (its primary-key lookups go in order too).

    Why COPY even for a few rows on PostgreSQL: psycopg's executemany runs in pipeline
    mode, after which the server does not arm ``idle_in_transaction_session_timeout``;
    a flusher frozen right after it would then hold the fencing token row for good.
    """
    if not lines:
        return 0
    postgres = connection.dialect.name == "postgresql"
    if method == "auto":
        method = "copy" if postgres else "executemany"
    if method == "copy":
        if not postgres:
            raise ValueError("COPY needs PostgreSQL")
        _copy_upsert(connection, lines)
    elif method == "executemany":
        _executemany_upsert(connection, [parse_line(line) for line in lines])
    else:
        raise ValueError(f"unknown upsert method {method!r}")
    return len(lines)


_VALUE_COLUMNS = (*COUNTER_COLUMNS, "last_active", "latency_histogram")
_STAGE = "fedtrack_stats_stage"
_STAGE_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (domain text, "
    + ", ".join(f"{name} bigint" for name in COUNTER_COLUMNS)
    + ", last_active bigint, latency_histogram text) ON COMMIT DELETE ROWS"
)
_STAGE_UPSERT = (
    f"INSERT INTO federation_server_stats ({', '.join(LINE_COLUMNS)}) "
    f"SELECT domain, {', '.join(COUNTER_COLUMNS)}, to_timestamp(last_active), latency_histogram "
    f'FROM {_STAGE} ORDER BY domain COLLATE "C" ON CONFLICT (domain) DO UPDATE SET '
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _VALUE_COLUMNS)
)


def _copy_upsert(connection: sa.Connection, lines: Sequence[str]) -> None:
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        for start in range(0, len(lines), COPY_BATCH):
            batch = lines[start : start + COPY_BATCH]
            with cursor.copy(f"COPY {_STAGE} ({', '.join(LINE_COLUMNS)}) FROM STDIN") as copy:
                copy.write("\n".join(batch) + "\n")
            cursor.execute(_STAGE_UPSERT)
            cursor.execute(f"TRUNCATE {_STAGE}")


class StatsWriter:
    """Writes stats lines on a transaction's connection in batches of `WRITER_BATCH`.

    On PostgreSQL the batches are written by a helper thread, so the caller can read the
    next shard from Redis meanwhile (the connection is only ever used by one thread at a
    time: the caller does not touch it until `finish` or `abort` returned). On SQLite
    they are written inline. `finish` returns the rows written and raises what a write
    raised; the caller stops early when `put` raises the same.
    """

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection
        self._buffer: list[str] = []
        self._rows = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[list[str] | None] | None = None
        self._thread: threading.Thread | None = None
        if connection.dialect.name == "postgresql":
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(
                target=self._run, name="fedtrack-flusher-writer", daemon=True
            )
            self._thread.start()

    def put(self, lines: Sequence[str]) -> None:
        if self._error is not None:
            raise self._error
        self._buffer.extend(lines)
        if len(self._buffer) >= WRITER_BATCH:
            self._send()

    def finish(self) -> int:
        if self._buffer:
            self._send()
        self._stop()
        if self._error is not None:
            raise self._error
        return self._rows

    def abort(self) -> None:
        self._buffer = []
        self._stop()

    def _send(self) -> None:
        batch, self._buffer = self._buffer, []
        if self._queue is None:
            self._write(batch)
        else:
            self._queue.put(batch)

    def _stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None

    def _run(self) -> None:
        assert self._queue is not None
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _write(self, batch: list[str]) -> None:
        self._rows += upsert_stats(self._connection, batch)


def _insert(connection: sa.Connection, table: sa.Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _executemany_upsert(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert = _insert(connection, federation_server_stats)
    statement = insert.on_conflict_do_update(
        index_elements=["domain"],
        set_={name: insert.excluded[name] for name in _VALUE_COLUMNS},
    )
    connection.execute(statement, rows)


def upsert_acks(connection: sa.Connection, acks: Iterable[tuple[int, str, int, int]]) -> int:
    """Persist (shard, worker id, seq, seen_at) acknowledgements; a stored seq and seen_at
    never go down.

    Multi-row ``INSERT … VALUES`` statements, not executemany (see `upsert_stats`).
    """
    rows = [
        {"shard": shard, "worker_id": worker, "seq": seq, "seen_at": seen}
        for shard, worker, seq, seen in acks
    ]
    insert = _insert(connection, federation_push_acks)
    greatest = sa.func.greatest if connection.dialect.name == "postgresql" else sa.func.max
    for start in range(0, len(rows), ACKS_BATCH):
        statement = insert.values(rows[start : start + ACKS_BATCH]).on_conflict_do_update(
            index_elements=["shard", "worker_id"],
            set_={
                "seq": greatest(_acks.seq, insert.excluded.seq),
                "seen_at": greatest(_acks.seen_at, insert.excluded.seen_at),
            },
        )
        connection.execute(statement)
    return len(rows)


def prune_acks(connection: sa.Connection, seen_before: int) -> int:
    """Forget the acks of workers silent since `seen_before` (unix seconds), as push.lua
    forgets them in Redis: one statement, however many workers churned. Returns how many."""
    result = connection.execute(sa.delete(federation_push_acks).where(_acks.seen_at < seen_before))
    return int(result.rowcount or 0)


# -- hydrate: read everything back ---------------------------------------------------------------


def load_lines(connection: sa.Connection) -> list[str]:
    """Every stats row as a stats line, sorted by domain (COPY TO on PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        query = (
            f"COPY (SELECT domain, {', '.join(COUNTER_COLUMNS)}, "
            "extract(epoch FROM last_active)::bigint, latency_histogram "
            'FROM federation_server_stats ORDER BY domain COLLATE "C") TO STDOUT'
        )
        driver = connection.connection.driver_connection
        assert driver is not None
        buffer = io.BytesIO()
        with driver.cursor() as cursor, cursor.copy(query) as copy:
            for block in copy:
                buffer.write(block)
        text = buffer.getvalue().decode("utf-8")
        return text.splitlines()
    rows = connection.execute(sa.select(federation_server_stats)).mappings().all()
    return sorted(format_line(dict(row)) for row in rows)


def load_acks(connection: sa.Connection) -> list[tuple[int, str, int]]:
    """Every persisted acknowledgement: (shard, worker id, seq), sorted (the hydrator
    restores them; their age restarts at the hydration)."""
    rows = connection.execute(
        sa.select(_acks.shard, _acks.worker_id, _acks.seq).order_by(_acks.shard, _acks.worker_id)
    )
    return [(int(shard), str(worker), int(seq)) for shard, worker, seq in rows]
