"""Shared helpers and fixtures of the flusher / hydrate / stats tests.

`push` sends a batch of per-domain deltas through the real push.lua (sealed as a worker
seals its chunks), so the flusher side can be tested without a tracker's timing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import scripts
from fedtrack_redis.batch import NOT_QUEUED
from fedtrack_redis.chunk import ACK_CAP, seal
from fedtrack_redis.connections import database_engine
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.keys import NamespaceKeys, shard_of
from fedtrack_redis.stats import FIELD_OF
from fedtrack_redis.store import migrate
from fedtrack_redis.store import stats as store_stats
from fedtrack_redis.store.schema import (
    COUNTER_COLUMNS,
    federation_push_acks,
    federation_server_stats,
)
from fedtrack_redis.store.stats import decode_histogram, encode_histogram
from servers import wait_for

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

_SLOTS = {
    "failed_http": 0,
    "failed_https": 1,
    "failed_smtp": 2,
    "success_http": 3,
    "success_https": 4,
    "success_smtp": 5,
    "inbound_deliveries": 6,
    "total_latency_ms": 7,
}

Deltas = Mapping[str, Mapping[str, int]]


def pending_row(fields: Mapping[str, int]) -> list[Any]:
    """A pending entry (`chunk.Pending`) holding `fields` (counters and ``h<b>``)."""
    row: list[Any] = [0, 0, 0, 0, 0, 0, 0, 0, NOT_QUEUED, None]
    histogram: dict[int, int] = {}
    for name, value in fields.items():
        if name in _SLOTS:
            row[_SLOTS[name]] += value
        elif name.startswith("h"):
            histogram[int(name[1:])] = value
        elif name != "successful_deliveries":  # derived by the chunk: successes + inbound
            raise ValueError(f"no such field {name}")
    derived = sum(row[3:7])
    if fields.get("successful_deliveries", derived) != derived:
        raise ValueError("successful_deliveries must equal the successes plus inbound")
    row[9] = histogram or None
    return row


def push(
    client: redis.Redis, keys: NamespaceKeys, worker: str, seq: int, deltas: Deltas
) -> dict[int, int]:
    """Push one batch through the real push.lua, one call per shard, as a worker would
    (sequence numbers from 1, as push.lua wants them); shard → 1 applied, 0 duplicate,
    -1 refused (not hydrated)."""
    script = scripts.register(client, "push")
    per_shard: dict[int, list[tuple[str, list[Any]]]] = {}
    for domain in sorted(deltas):
        per_shard.setdefault(shard_of(domain), []).append((domain, pending_row(deltas[domain])))
    outcome: dict[int, int] = {}
    for shard, rows in per_shard.items():
        chunk = seal(keys.shards[shard], seq, worker, 30_000, 86_400, rows)
        reply = script(keys=list(chunk.keys), args=[*chunk.args, "", ACK_CAP])
        outcome[shard] = {1: 1, 2: 0, 0: -1}[int(reply[0])]
    return outcome


def mark_hydrated(client: redis.Redis, keys: NamespaceKeys) -> None:
    for shard in keys.shards:
        client.set(shard.hydrated, 1)


def event_deltas(index: int, domains: list[str]) -> dict[str, dict[str, int]]:
    """A deterministic mix of events over `domains` (batch number `index`)."""
    deltas: dict[str, dict[str, int]] = {}
    for offset, domain in enumerate(domains):
        n = index + offset
        fields = {
            "failed_https": n % 3,
            "success_smtp": 1 + n % 2,
            "successful_deliveries": 1 + n % 2 + n % 4,
            "inbound_deliveries": n % 4,
            "total_latency_ms": 10 * (n % 7) + 1,
            f"h{n % 40}": 1 + n % 2,
        }
        deltas[domain] = {field: value for field, value in fields.items() if value}
    return deltas


def redis_stats(client: redis.Redis, keys: NamespaceKeys, domains: list[str]) -> dict[str, Any]:
    """Each domain's hash as a row-like dict (counters, last_active, histogram dict)."""
    with client.pipeline(transaction=False) as pipe:
        for domain in domains:
            pipe.hgetall(keys.shard_for(domain).domain(domain))
        hashes = pipe.execute()
    out: dict[str, Any] = {}
    for domain, fields in zip(domains, hashes, strict=True):
        if not fields:
            continue
        row: dict[str, Any] = {name: int(fields.get(FIELD_OF[name], 0)) for name in COUNTER_COLUMNS}
        row["last_active"] = int(fields.get(FIELD_OF["last_active"], 0))
        row["histogram"] = {
            int(name[1:]): int(value)
            for name, value in fields.items()
            if name.startswith("h") and name[1:].isdigit() and int(value)
        }
        out[domain] = row
    return out


def db_stats(engine: sa.Engine) -> dict[str, Any]:
    """Every federation_server_stats row in the same shape as `redis_stats`."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(federation_server_stats)).mappings().all()
    out: dict[str, Any] = {}
    for row in rows:
        item: dict[str, Any] = {name: int(row[name]) for name in COUNTER_COLUMNS}
        last_active = row["last_active"]
        if last_active is None:
            item["last_active"] = 0
        else:
            if last_active.tzinfo is None:
                last_active = last_active.replace(tzinfo=dt.UTC)
            item["last_active"] = int(last_active.timestamp())
        item["histogram"] = decode_histogram(row["latency_histogram"])
        out[str(row["domain"])] = item
    return out


def write_rows(
    engine: sa.Engine,
    rows: Mapping[str, Mapping[str, Any]],
    acks: list[tuple[int, str, int]] | None = None,
) -> None:
    """Store rows shaped like `db_stats` (and (shard, worker, seq) acks, seen now) directly,
    as a flush would."""
    lines = []
    for domain, row in sorted(rows.items()):
        item = dict(row)
        item["domain"] = domain
        seconds = int(row.get("last_active", 0))
        item["last_active"] = dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None
        item["latency_histogram"] = encode_histogram(row.get("histogram", {}))
        lines.append(store_stats.format_line(item))
    with engine.begin() as connection:
        store_stats.upsert_stats(connection, lines)
        now = int(dt.datetime.now(dt.UTC).timestamp())
        store_stats.upsert_acks(connection, [(*ack, now) for ack in acks or []])


def make_rows(count: int, prefix: str = "d", last_active: int = 1_700_000_000) -> dict[str, Any]:
    """`count` distinct rows with varied counters and histograms."""
    rows: dict[str, Any] = {}
    for i in range(count):
        row: dict[str, Any] = {name: (i * 7 + n) % 5 for n, name in enumerate(COUNTER_COLUMNS)}
        row["queued_messages"] = i % 3
        row["last_active"] = last_active + i
        row["histogram"] = {i % 50: 1 + i % 3, 60 + i % 7: 2} if i % 4 else {}
        rows[f"{prefix}{i}.example"] = row
    return rows


def db_acks(engine: sa.Engine) -> dict[tuple[int, str], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                federation_push_acks.c.shard,
                federation_push_acks.c.worker_id,
                federation_push_acks.c.seq,
            )
        ).all()
    return {(int(shard), str(worker)): int(seq) for shard, worker, seq in rows}


def totals(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Sum of every counter and histogram bucket over all domains."""
    out: dict[str, int] = {}
    for row in rows.values():
        for name in COUNTER_COLUMNS:
            out[name] = out.get(name, 0) + int(row[name])
        for bucket, count in row["histogram"].items():
            out[f"h{bucket}"] = out.get(f"h{bucket}", 0) + count
    return out


def expected_totals(batches: list[Deltas]) -> dict[str, int]:
    out: dict[str, int] = {name: 0 for name in COUNTER_COLUMNS}
    for batch in batches:
        for fields in batch.values():
            for name, value in fields.items():
                out[name] = out.get(name, 0) + value
    return out


def without(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in names}


def run_python(
    code: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` with the tests directory importable."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=ROOT,
    )


@contextlib.contextmanager
def make_engine(url: str) -> Iterator[sa.Engine]:
    engine = database_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database (PostgreSQL and SQLite), schema created."""
    with make_engine(database_url) as created:
        migrate.upgrade(created)
        yield created


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[sa.Engine]:
    with make_engine(postgres_url) as created:
        migrate.upgrade(created)
        yield created


@pytest.fixture
def keys(namespace: str) -> NamespaceKeys:
    return NamespaceKeys(namespace)


@pytest.fixture
def make_flusher(redis_url: str, namespace: str) -> Iterator[Callable[..., Flusher]]:
    """Build Flushers on this test's namespace (Redis URL given); all stopped afterwards."""
    made: list[Flusher] = []

    def make(database: str | sa.Engine, **options: Any) -> Flusher:
        options.setdefault("namespace", namespace)
        flusher = Flusher(options.pop("redis", redis_url), database, **options)
        made.append(flusher)
        return flusher

    yield make
    for flusher in made:
        flusher.stop()


def leaders(flushers: list[Flusher]) -> int:
    return sum(1 for flusher in flushers if flusher.is_leader)


def wait_for_leader(flushers: list[Flusher], timeout: float) -> Flusher:
    found = wait_for(
        lambda: [f for f in flushers if f.is_leader], timeout, "one flusher becomes leader"
    )
    assert len(found) == 1
    return found[0]


# A worker process that pushes a known mix with the push.lua stand-in, then exits.
MIMIC_WORKER = """
import sys
import redis
from fedtrack_redis.keys import NamespaceKeys
from flusher_helpers import event_deltas, push, worker_domains
url, namespace, worker, batches = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = redis.Redis.from_url(url, decode_responses=True)
keys = NamespaceKeys(namespace)
for seq in range(1, batches + 1):
    outcome = push(client, keys, worker, seq, event_deltas(seq, worker_domains(worker, seq)))
    assert set(outcome.values()) == {1}, outcome
client.close()
"""


def worker_domains(worker: str, seq: int, total: int = 300) -> list[str]:
    """The domains a worker's batch `seq` touches: overlapping windows over `total` domains."""
    start = (hash_text(worker) * 37 + seq * 11) % total
    return [f"site{(start + i) % total}.example" for i in range(60)]


def hash_text(text: str) -> int:
    return sum(ord(char) * (index + 1) for index, char in enumerate(text))


def mimic_expected(workers: list[str], batches: int) -> list[dict[str, dict[str, int]]]:
    return [
        event_deltas(seq, worker_domains(worker, seq))
        for worker in workers
        for seq in range(1, batches + 1)
    ]


# A worker process: a real FederationTracker records a known mix of events, then closes.
TRACKER_WORKER = """
import sys
from fedtrack_redis.tracker import FederationTracker
from flusher_helpers import tracker_events
url, namespace, worker = sys.argv[1:4]
tracker = FederationTracker(url, namespace=namespace, push_interval=0.05)
for index, (kind, domain, transport, latency) in enumerate(tracker_events(int(worker))):
    if kind == "success":
        tracker.record_success(domain, latency, transport)
    elif kind == "failure":
        tracker.record_failure(domain, transport)
    else:
        tracker.increment_queue(domain)
    if index % 700 == 0:
        tracker.push()
tracker.close()
"""

TRANSPORTS = ("HTTP", "HTTPS", "SMTP", "", "https", "Smtp")


def tracker_events(worker: int, count: int = 3000) -> list[tuple[str, str, str, int]]:
    """A deterministic mix of (kind, domain, transport, latency) for one worker."""
    events = []
    for i in range(count):
        domain = f"site{(i * 7 + worker * 13) % 250}.example"
        if i % 3 == 0 and i % 9:
            domain = domain.upper()  # spellings of one domain count together
        transport = TRANSPORTS[(i + worker) % len(TRANSPORTS)]
        if i % 11 == 0:
            events.append(("queue", domain, "", 0))
        elif i % 4 == 0 and transport:
            events.append(("failure", domain, transport, 0))
        else:
            events.append(("success", domain, transport, (i * 37 + worker) % 5000))
    return events


def tracker_expected(workers: list[int]) -> dict[str, int]:
    """Totals the mix of `tracker_events` must produce (queued: 0 once workers closed)."""
    out = {name: 0 for name in COUNTER_COLUMNS}
    out["histogram"] = 0
    for worker in workers:
        for kind, _domain, transport, latency in tracker_events(worker):
            name = transport.lower()
            if kind == "failure":
                out[f"failed_{name}"] += 1
            elif kind == "success":
                out["successful_deliveries"] += 1
                out["total_latency_ms"] += latency
                if name:
                    out[f"success_{name}"] += 1
                    out["histogram"] += 1
                else:
                    out["inbound_deliveries"] += 1
    return out
