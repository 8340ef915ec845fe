"""The flusher's §5 figures, each beside a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_flusher [--quick]

* flush: 100,000 changed domains read from Redis (``flush_read.lua``) and UPSERTed into
  PostgreSQL in one transaction (COPY + ``INSERT … ON CONFLICT``), target ≤ 1 s; baseline:
  the same rows through a plain SQLAlchemy executemany UPSERT;
* hydrate: 100,000 domains from PostgreSQL back into an emptied Redis, target ≤ 1 s;
  baseline: the same hashes written with pipelined HSETs (no chunks, no exactly-once);
* failover: from SIGKILL of the leader (another process) to a standby leading, target
  within the lock TTL (10 s; 2 s with ``--quick``).

Uses the local Redis and PostgreSQL (``FEDTRACK_BENCH_REDIS_URL``,
``FEDTRACK_BENCH_DATABASE_URL``), a scratch namespace and a scratch database, both
removed at the end. ``--quick`` runs 10,000 domains and one failover with a 2 s TTL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from benchmarks.common import (
    REDIS_URL,
    delete_namespace,
    machine,
    median,
    scratch_database,
    scratch_namespace,
)
from fedtrack_redis import __version__
from fedtrack_redis.connections import database_engine
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.hydrate import hydrate_shards
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.store import stats as store

LEADER = """
import sys, time
from fedtrack_redis.flusher import Flusher
flusher = Flusher(sys.argv[1], sys.argv[2], namespace=sys.argv[3], lock_ttl=float(sys.argv[4]))
flusher.start()
while not flusher.is_leader:
    time.sleep(0.01)
print("leader", flush=True)
sys.stdin.read()
"""


def populate(client: redis.Redis, keys: NamespaceKeys, count: int, workers: int = 8) -> list[str]:
    """`count` domains with realistic hashes, all in the changed sets; shards hydrated."""
    rng = random.Random(7)
    now = int(time.time())
    domains = [f"host{i}.bench{i % 97}.example" for i in range(count)]
    with client.pipeline(transaction=False) as pipe:
        for shard in keys.shards:
            pipe.set(shard.hydrated, now)
            for worker in range(workers):
                pipe.hset(shard.acks, f"worker-{worker}", rng.randrange(1, 10**6))
        for index, domain in enumerate(domains):
            shard = keys.shard_for(domain)
            successes = rng.randrange(0, 500)
            fields: dict[str, int] = {
                "failed_https": rng.randrange(0, 20),
                "failed_smtp": rng.randrange(0, 5),
                "success_https": successes,
                "success_smtp": rng.randrange(0, 50),
                "successful_deliveries": successes + rng.randrange(0, 100),
                "inbound_deliveries": rng.randrange(0, 100),
                "total_latency_ms": rng.randrange(0, 10**7),
                "queued_messages": rng.randrange(0, 3),
                "last_active": now - rng.randrange(0, 86400),
                f"h{rng.randrange(20, 50)}": rng.randrange(1, 200),
                f"h{rng.randrange(50, 70)}": rng.randrange(1, 50),
            }
            pipe.hset(shard.domain(domain), mapping=fields)
            pipe.zadd(shard.active, {domain: fields["last_active"]})
            pipe.sadd(shard.changed, domain)
            if index % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    return domains


def mark_all_changed(client: redis.Redis, keys: NamespaceKeys) -> None:
    for shard in keys.shards:
        members = client.zrange(shard.active, 0, -1)
        for start in range(0, len(members), 10000):
            client.sadd(shard.changed, *members[start : start + 10000])


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_flush(
    client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, count: int
) -> dict[str, float]:
    populate(client, keys, count)
    flusher = Flusher(client, engine, namespace=keys.namespace, interval=3600)
    read_times: list[float] = []
    original_read = flusher._read_shard

    def read_shard(index: int, candidates: set[str]) -> Any:
        seconds, snapshot = timed(lambda: original_read(index, candidates))
        read_times.append(seconds)
        return snapshot

    flusher._read_shard = read_shard  # type: ignore[method-assign]
    try:
        insert, rows = timed(flusher.flush_once)  # first flush as leader: full, all INSERTs
        assert rows == count, rows
        updates, reads = [], []
        for _ in range(3):
            mark_all_changed(client, keys)
            read_times.clear()
            seconds, rows = timed(flusher.flush_once)
            assert rows == count, rows
            updates.append(seconds)
            reads.append(sum(read_times))
    finally:
        flusher.stop()
    # The same rows written directly: COPY path vs plain executemany, one transaction each.
    with engine.connect() as connection:
        lines = store.load_lines(connection)
    copy_times, many_times = [], []
    for _ in range(3):
        with engine.begin() as connection:
            copy_times.append(
                timed(lambda: store.upsert_stats(connection, lines, method="copy"))[0]
            )
        with engine.begin() as connection:
            many_times.append(
                timed(lambda: store.upsert_stats(connection, lines, method="executemany"))[0]
            )
    return {
        "flush_insert": insert,
        "flush_update": median(updates),
        "read": median(reads),
        "copy_upsert": median(copy_times),
        "executemany_upsert": median(many_times),
    }


def bench_hydrate(
    client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, count: int
) -> dict[str, float]:
    delete_namespace(keys.namespace)
    seconds, restored = timed(lambda: hydrate_shards(client, keys, engine))
    assert restored == count, restored
    # Baseline: the same hashes with pipelined HSETs.
    with engine.connect() as connection:
        rows = [store.parse_line(line) for line in store.load_lines(connection)]
    delete_namespace(keys.namespace)

    def hset_all() -> None:
        with client.pipeline(transaction=False) as pipe:
            for index, row in enumerate(rows):
                fields = {k: v for k, v in row.items() if k in store.COUNTER_COLUMNS and v}
                for bucket, n in store.decode_histogram(row["latency_histogram"]).items():
                    fields[f"h{bucket}"] = n
                last_active: dt.datetime | None = row["last_active"]
                if last_active is not None:
                    fields["last_active"] = int(last_active.timestamp())
                pipe.hset(keys.shard_for(row["domain"]).domain(row["domain"]), mapping=fields)
                if index % 5000 == 4999:
                    pipe.execute()
            pipe.execute()

    baseline, _ = timed(hset_all)
    delete_namespace(keys.namespace)
    return {"hydrate": seconds, "hset_baseline": baseline}


def bench_failover(database_url: str, ttl: float, runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        namespace = scratch_namespace()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        leader = subprocess.Popen(
            [sys.executable, "-c", LEADER, REDIS_URL, database_url, namespace, str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        standby = Flusher(REDIS_URL, database_url, namespace=namespace, lock_ttl=ttl)
        try:
            assert leader.stdout is not None
            assert leader.stdout.readline().strip() == "leader"
            standby.start()
            time.sleep(ttl / 2)  # let a few renewals happen
            assert not standby.is_leader
            leader.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            while not standby.is_leader:
                time.sleep(0.001)
                if time.monotonic() - killed > 3 * ttl:
                    raise RuntimeError("no failover")
            figures.append(time.monotonic() - killed)
        finally:
            with contextlib.suppress(ProcessLookupError):
                leader.kill()
            leader.wait()
            for stream in (leader.stdin, leader.stdout):
                if stream is not None:
                    stream.close()
            standby.stop()
            delete_namespace(namespace)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 domains, 2 s TTL")
    options = parser.parse_args()
    count = 10_000 if options.quick else 100_000
    ttl = 2.0 if options.quick else 10.0
    runs = 1 if options.quick else 3
    namespace = scratch_namespace()
    keys = NamespaceKeys(namespace)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        with scratch_database() as database_url:
            engine = database_engine(database_url)
            try:
                flush = bench_flush(client, keys, engine, count)
                hydrate = bench_hydrate(client, keys, engine, count)
            finally:
                engine.dispose()
            failover = bench_failover(database_url, ttl, runs)
    finally:
        delete_namespace(namespace)
        client.close()

    n = f"{count:,}"
    print(f"## Flusher ({time.strftime('%Y-%m-%d')}, fedtrack-redis {__version__}, {machine()})")
    print()
    print("| figure | measured | baseline (same run) | target |")
    print("|---|---|---|---|")
    print(
        f"| flush of {n} changed domains (read + COPY UPSERT, rows exist) | "
        f"{flush['flush_update']:.3f} s (of which Redis reads {flush['read']:.3f} s, "
        "overlapped with the writes) | "
        f"executemany UPSERT alone {flush['executemany_upsert']:.3f} s; "
        f"COPY UPSERT alone {flush['copy_upsert']:.3f} s "
        f"(x{flush['executemany_upsert'] / flush['copy_upsert']:.1f} faster) | ≤ 1 s |"
    )
    print(f"| first flush of {n} domains (all INSERTs) | {flush['flush_insert']:.3f} s | | |")
    print(
        f"| hydrate {n} domains | {hydrate['hydrate']:.3f} s | pipelined HSET "
        f"{hydrate['hset_baseline']:.3f} s (x{hydrate['hydrate'] / hydrate['hset_baseline']:.2f})"
        " | ≤ 1 s |"
    )
    print(
        f"| failover after SIGKILL (lock TTL {ttl:g} s, {runs} runs) | "
        f"max {max(failover):.3f} s ({', '.join(f'{f:.3f}' for f in failover)}) | | "
        f"≤ {ttl:g} s |"
    )


if __name__ == "__main__":
    main()
