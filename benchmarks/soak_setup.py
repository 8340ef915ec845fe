"""Set-up of the soak's misconfigured databases: a second PostgreSQL database and a SQLite
file, each with a schema, an identity of its own, different rules (a REJECT policy) and
small stats rows for the soak's own domains, as a staging database would have.

If a process on one of them ever hydrated the soak's Redis, rebuilt its policy or flushed
into it, the soak would see it: totals going backwards, rules nobody set, rows written
there (the tables are dumped before and after).
"""

from __future__ import annotations

import secrets
import time

import redis

from benchmarks.soak_checks import dump_database
from benchmarks.soak_engines import RedisSentinelSet
from fedtrack_redis import FederationTracker, Flusher, PolicyStore

SEEDED_RULE = "wrongdb-seeded.soak.example"


def seed_wrong_database(
    url: str, redis_url: str, sentinels: RedisSentinelSet, names: list[str]
) -> dict[str, tuple[int, str]]:
    """Fill the database at `url` through a scratch namespace (then deleted from Redis);
    return the dump of its tables."""
    namespace = "seed" + secrets.token_hex(4)
    store = PolicyStore(url, redis_url, namespace=namespace).init(migrate=True)
    try:
        for rule in [SEEDED_RULE, *names[:5]]:
            store.add_rule(rule)
        store.set_policy("REJECT")
    finally:
        store.close()
    flusher = Flusher(redis_url, url, namespace=namespace, interval=0.5)
    tracker = FederationTracker(redis_url, namespace=namespace, worker_id=f"{namespace}-w")
    try:
        flusher.flush_once()  # takes the lock and hydrates the empty namespace
        for name in names[:30]:
            tracker.record_success(name, 5, "HTTPS")
        tracker.push(timeout=30)
        deadline = time.monotonic() + 30
        written = 0
        while written < 30:
            written += flusher.flush_once()
            if time.monotonic() > deadline:
                raise RuntimeError(f"seeding {url}: only {written} rows flushed")
            time.sleep(0.1)
    finally:
        tracker.close()
        flusher.stop()
    client = redis.Redis(port=sentinels.master_port())
    try:
        keys = list(client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    return dump_database(url)
