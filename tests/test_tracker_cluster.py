"""Exactness across processes: 4 worker processes record known random mixes over hundreds
of domains and close; Redis holds exactly the sum, field for field."""

from __future__ import annotations

import multiprocessing

import redis

from fedtrack_redis.connections import database_engine
from fedtrack_redis.hydrate import hydrate_shards
from fedtrack_redis.keys import NamespaceKeys
from tracker_helpers import (
    all_domain_hashes,
    expected_totals,
    is_history_field,
    lease_holders,
    run_worker,
    workload,
)

WORKERS = 4
EVENTS = 20_000


def test_four_worker_processes_add_up_exactly(
    redis_client: redis.Redis, redis_url: str, namespace: str, sqlite_url: str
) -> None:
    engine = database_engine(sqlite_url)
    try:  # hydrate up front, as the flusher leader would (workers never hydrate)
        hydrate_shards(redis_client, NamespaceKeys(namespace), engine)
    finally:
        engine.dispose()
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        ids = pool.starmap(
            run_worker,
            [(redis_url, namespace, seed, EVENTS) for seed in range(WORKERS)],
        )
    assert len(set(ids)) == WORKERS
    expected: dict[str, dict[str, int]] = {}
    for seed in range(WORKERS):
        for domain, fields in expected_totals(workload(seed, 300, EVENTS)).items():
            into = expected.setdefault(domain, {})
            for name, amount in fields.items():
                into[name] = into.get(name, 0) + amount
    stored = all_domain_hashes(redis_client, namespace)
    assert set(stored) == set(expected)
    for domain, fields in stored.items():
        assert int(fields.pop("last_active")) > 0
        assert int(fields.pop("queued_messages", "0")) == 0  # every worker closed
        stats = {n: int(v) for n, v in fields.items() if not is_history_field(n)}
        assert stats == expected[domain], domain
    assert lease_holders(redis_client, namespace) == set()
