"""reads.py and the indexes push.lua keeps: pages, totals and anomalies from indexes equal
what a look at every domain gives (real Redis, real tracker pushes)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conftest import upgrade_schema
from fedtrack_redis import FederationTracker, Flusher, anomalies
from fedtrack_redis.anomalies import Baseline, find_anomalies, indexed_anomalies
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.reads import page, read_all, top, totals
from fedtrack_redis.stats import COUNTER_FIELDS, ServerStat

ORDERS = {
    "activity": lambda s: (-s.last_active, s.domain),
    "failures": lambda s: (-(s.failed_http + s.failed_https + s.failed_smtp), s.domain),
    "latency": lambda s: (-s.mean_latency_ms, s.domain),
    "queued": lambda s: (-s.queued_messages, s.domain),
}


@pytest.fixture
def loaded(
    redis_url: str, redis_client: redis.Redis, namespace: str, sqlite_url: str
) -> Iterator[RedisEngine]:
    """A namespace with 300 domains of varied traffic, pushed by a real tracker and
    flushed once (the flusher refreshes the top lists)."""
    flusher = Flusher(redis_url, upgrade_schema(sqlite_url), namespace=namespace)
    flusher.flush_once()
    rng = random.Random(7)
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=3600)
    try:
        for index in range(300):
            domain = f"r{index}.example{index % 7}.org"
            for _ in range(rng.randint(0, 30)):
                tracker.record_success(domain, rng.choice([5, 20, 80, 300]), "HTTPS")
            for _ in range(12 if index % 25 == 0 else 0):
                tracker.record_success(domain, 60_000, "SMTP")  # a slow one
            for _ in range(rng.randint(0, 25) if index % 4 == 0 else 0):
                tracker.record_failure(domain, "SMTP")
            for _ in range(rng.randint(0, 150) if index % 9 == 0 else 0):
                tracker.increment_queue(domain)
            tracker.touch(domain)
            if index % 50 == 49:
                tracker.push()
        tracker.push()
        flusher.flush_once()
        engine = RedisEngine.open(redis_url)
        yield engine
        engine.close()
    finally:
        tracker.close(timeout=5)
        flusher.stop()


def every(engine: RedisEngine, namespace: str) -> list[ServerStat]:
    return read_all(engine, NamespaceKeys(namespace))


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_pages_equal_a_sort_of_every_domain(
    loaded: RedisEngine, namespace: str, order: str
) -> None:
    keys = NamespaceKeys(namespace)
    everything = every(loaded, namespace)
    if order != "activity":  # the top lists hold only domains with a non-zero score
        score = {
            "failures": ORDERS["failures"],
            "latency": ORDERS["latency"],
            "queued": ORDERS["queued"],
        }[order]
        everything = [s for s in everything if score(s)[0] != 0]
    expected = sorted(everything, key=ORDERS[order])
    for offset, limit in ((0, 50), (50, 50), (17, 100), (280, 50)):
        got, total = page(loaded, keys, order, limit, offset)
        assert [s.domain for s in got] == [s.domain for s in expected[offset : offset + limit]]
        assert total == len(expected)


def test_totals_equal_the_sum_of_every_domain(loaded: RedisEngine, namespace: str) -> None:
    everything = every(loaded, namespace)
    sums = totals(loaded, NamespaceKeys(namespace))
    assert sums["domains"] == len(everything) == 300
    for name in COUNTER_FIELDS:
        assert sums[name] == sum(getattr(s, name) for s in everything), name
    assert sums["queued_messages"] == sum(s.queued_messages for s in everything) > 0


def test_indexed_anomalies_equal_a_look_at_every_domain(
    loaded: RedisEngine, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    sums = totals(loaded, keys)
    full = find_anomalies(every(loaded, namespace), Baseline.from_totals(sums))
    assert full, "the traffic has failing, slow and backlogged domains"
    assert {a.kind for a in full} == {"failures", "latency", "backlog"}
    assert indexed_anomalies(loaded, keys) == full


def test_anomaly_candidates_that_cannot_be_one_are_not_read(
    loaded: RedisEngine, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = NamespaceKeys(namespace)
    read: list[str] = []
    real = anomalies.read_hashes

    def counting(engine: RedisEngine, wanted: list[tuple[str, Any]]) -> list[ServerStat]:
        read.extend(domain for domain, _shard in wanted)
        return real(engine, wanted)

    monkeypatch.setattr(anomalies, "read_hashes", counting)
    # 2 candidates a shard, so that the lists do not hold every domain of the 300
    monkeypatch.setattr(anomalies, "CANDIDATES", 2)
    indexed_anomalies(loaded, keys)
    assert anomalies.LEAST_SCORE == {"failures": 2, "latency": 0.0, "queued": 100.0}
    depth = anomalies.CANDIDATES * len(keys.shards)
    listed = {
        order: top(loaded, keys, order, depth, anomalies.CANDIDATES)
        for order in anomalies.LEAST_SCORE
    }
    wanted = {
        domain
        for order, entries in listed.items()
        for domain, score, _shard in entries
        if score >= anomalies.LEAST_SCORE[order]
    }
    every_candidate = {domain for entries in listed.values() for domain, _s, _sh in entries}
    assert sorted(read) == sorted(wanted)
    assert wanted < every_candidate  # fewer failing and queued domains needed reading
