"""reads.py and the indexes push.lua keeps: pages, totals and anomalies from indexes equal
what a look at every domain gives (real Redis, real tracker pushes)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from conftest import upgrade_schema
from fedtrack_redis import FederationTracker, Flusher
from fedtrack_redis.anomalies import Baseline, find_anomalies, indexed_anomalies
from fedtrack_redis.chunk import TOP_SIZE
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.reads import page, read_all, totals
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


def test_a_deep_page_of_a_top_list_is_refused(loaded: RedisEngine, namespace: str) -> None:
    with pytest.raises(ValueError, match="1,000"):
        page(loaded, NamespaceKeys(namespace), "failures", 100, TOP_SIZE)
    with pytest.raises(ValueError, match="unknown order"):
        page(loaded, NamespaceKeys(namespace), "bogus", 10, 0)


def test_top_lists_stay_bounded(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedtrack_redis import tops

    monkeypatch.setattr(tops.TopRefresh.__init__, "__defaults__", (5,))
    keys = NamespaceKeys(namespace)
    flusher = Flusher(redis_url, upgrade_schema(sqlite_url), namespace=namespace)
    flusher.flush_once()
    with FederationTracker(redis_url, namespace=namespace, push_interval=3600) as tracker:
        for index in range(400):
            tracker.record_failure(f"f{index}.example", "HTTP")
            tracker.record_success(f"f{index}.example", index, "HTTP")
        tracker.push()
        assert flusher.flush_once() == 400
        flusher.stop()
        for shard in keys.shards:
            assert redis_client.zcard(shard.top_failures) <= 5
            assert redis_client.zcard(shard.top_latency) <= 5
        # each shard keeps its slowest five: the global top five are among them
        got, _total = page(redis_client, keys, "latency", 5, 0)
        assert [s.domain for s in got] == [f"f{i}.example" for i in range(399, 394, -1)]


def test_a_top_list_refresh_writes_changed_members_and_only_the_best_newcomers() -> None:
    from fedtrack_redis.tops import _List

    members = {"old.example": 2.0, "low.example": 1.0, "same.example": 3.0}
    item = _List("top", members=members, lowest=1.0, full=False)
    item.offer(
        [f"n{index}.example" for index in range(1_000)], [index + 1.0 for index in range(1_000)]
    )
    # a member's new score is written however low; an unchanged one is not sent again
    item.offer(["old.example", "same.example"], [0.5, 3.0])
    written = item.to_write(size=10)
    newcomers = sorted((d for d in written if d not in item.members), key=written.__getitem__)
    assert newcomers == [f"n{index}.example" for index in range(990, 1_000)]
    assert written["old.example"] == 0.5
    assert "same.example" not in written
    assert len(written) == 11
