"""History series (G13): sums exact per domain and cluster-wide across bucket boundaries,
across retries and the leader's closing; the caps; the memory they bound.

The clock is injected (`history_helpers.clock`): pushes, reads and closing share one time
the test moves across 1-minute and 5-minute boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from fedtrack_redis import (
    FederationTracker,
    InvalidDomainError,
    InvalidWindowError,
    history,
    scripts,
)
from fedtrack_redis.chunk import seal
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.history import FIVE, MINUTE, read_history
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.scripts import Scripts
from fedtrack_redis.series import SeriesCloser
from history_helpers import EPOCH, Clock, bases_left, clock, counted, merge, sums
from tracker_helpers import (
    domain_hash,
    expected_totals,
    is_history_field,
    make_tracker,
    replay,
    workload,
)

__all__ = ["clock", "make_tracker"]

MakeTracker = Callable[..., FederationTracker]


def closer(redis_url: str, namespace: str, top: int = 1_000) -> SeriesCloser:
    engine = RedisEngine.open(redis_url)
    return SeriesCloser(engine, Scripts(engine), NamespaceKeys(namespace), top=top)


def by_start(buckets: list[Any]) -> dict[int, dict[str, int]]:
    return {b.start: sums([b]) for b in buckets if sums([b])}


def test_series_sums_equal_the_events_recorded_across_bucket_boundaries(
    make_tracker: MakeTracker, clock: Clock, redis_url: str, namespace: str
) -> None:
    tracker = make_tracker()
    clock.set(EPOCH + FIVE - 70)  # 70 s before a 5-minute boundary, in its minute -2
    phases = [workload(seed, 12, 400) for seed in (1, 2, 3, 4)]
    steps = [0, 40, 40, 200]  # minute -2, minute -1, the new 5-minute bucket, 4 min later
    expected_cluster: dict[int, dict[str, int]] = {}
    expected_five: dict[int, dict[str, int]] = {}
    expected_domain: dict[str, dict[int, dict[str, int]]] = {}
    for events, step in zip(phases, steps, strict=True):
        clock.advance(step)
        replay(tracker, events)
        tracker.push()
        minute, five = clock.now // MINUTE * MINUTE, clock.now // FIVE * FIVE
        for domain, fields in expected_totals(events).items():
            merge(expected_cluster.setdefault(minute, {}), counted(fields))
            merge(expected_five.setdefault(five, {}), counted(fields))
            merge(expected_domain.setdefault(domain, {}).setdefault(five, {}), counted(fields))

    def check() -> None:
        cluster = tracker.history(window="1h")
        assert len(cluster) == 60 and cluster[-1].start == clock.now // MINUTE * MINUTE
        assert [b.start for b in cluster] == list(
            range(cluster[0].start, cluster[-1].start + 1, 60)
        )
        assert by_start(cluster) == {k: v for k, v in expected_cluster.items() if v}
        assert by_start(tracker.history(window="24h")) == by_start(cluster)
        week = tracker.history(window="7d")
        assert len(week) == 2016 and week[-1].start == clock.now // FIVE * FIVE
        assert by_start(week) == {k: v for k, v in expected_five.items() if v}
        for domain, buckets in expected_domain.items():
            for window, count in (("1h", 12), ("24h", 288), ("7d", 2016)):
                series = tracker.history(domain, window)
                assert len(series) == count and series[-1].start == clock.now // FIVE * FIVE
                assert by_start(series) == {k: v for k, v in buckets.items() if v}, domain

    check()  # read from the shards and the open buckets: readable at once
    clock.advance(FIVE)  # every bucket above is finished now
    closer(redis_url, namespace).close()
    check()  # read from the namespace hashes and the kept domain series
    closer(redis_url, namespace).close()  # a second closing (a new leader) changes nothing
    check()


def test_a_retried_chunk_counts_once_in_the_series(
    redis_client: redis.Redis, namespace: str, clock: Clock
) -> None:
    keys = NamespaceKeys(namespace)
    shard = keys.shard_for("a.example")
    for each in keys.shards:
        redis_client.set(each.hydrated, "1")
    push = scripts.register(redis_client, "push")
    row = [1, 0, 0, 0, 2, 0, 0, 30, -1, None]  # 1 http failure, 2 https successes
    chunk = seal(shard, 1, "w1", 30_000, 600, [("a.example", row)])
    assert push(keys=list(chunk.keys), args=[*chunk.args, "", 100_000])[0] == 1
    assert push(keys=list(chunk.keys), args=[*chunk.args, "", 100_000])[0] == 2  # duplicate
    expected = {"failed_http": 1, "success_https": 2, "successful_deliveries": 2}
    expected["total_latency_ms"] = 30
    engine = RedisEngine.open(redis_client)
    assert sums(read_history(engine, keys, None, "1h")) == expected
    assert sums(read_history(engine, keys, "a.example", "1h")) == expected


def test_closing_keeps_the_most_active_the_watched_and_the_held(
    make_tracker: MakeTracker,
    clock: Clock,
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
) -> None:
    tracker = make_tracker()
    keys = NamespaceKeys(namespace)
    names = [f"d{i}.example" for i in range(6)]
    for index, name in enumerate(names):
        for _ in range(index + 1):  # d5 is the most active, d0 the least
            # permanent: counted, but no domain is held back by delivery health
            tracker.record_failure(name, "SMTP", permanent=True)
    tracker.push()
    assert tracker.watch("D0.example.") is True  # any spelling
    assert tracker.watch("d0.example") is False
    redis_client.zadd(keys.shard_for("d1.example").held, {"d1.example": 1})  # not healthy
    for name in names:  # while the bucket is open every active domain has its series
        assert sums(tracker.history(name, "1h")) == {"failed_smtp": names.index(name) + 1}
    clock.advance(FIVE)
    closer(redis_url, namespace, top=2).close()
    kept = {name for name in names if sums(tracker.history(name, "1h"))}
    assert kept == {"d5.example", "d4.example", "d0.example", "d1.example"}
    assert sums(tracker.history("d5.example", "7d")) == {"failed_smtp": 6}
    assert sums(tracker.history("d2.example", "24h")) == {}  # outside the caps: zero buckets
    assert sums(tracker.history(window="1h")) == {"failed_smtp": 21}  # the cluster keeps all
    assert tracker.unwatch("d0.example") is True
    assert tracker.unwatch("d0.example") is False
    for shard in keys.shards:  # nothing left waiting
        assert redis_client.hlen(shard.series_closed) == 0
    assert bases_left(RedisEngine.wrap(redis_client), keys, names) == 0


def test_a_domain_written_again_after_its_bucket_closes_its_bucket_exactly(
    make_tracker: MakeTracker,
    clock: Clock,
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
) -> None:
    def bucket_fields() -> dict[str, str]:  # the hash's base and the field naming its bucket
        fields = domain_hash(redis_client, namespace, "a.example")
        return {name: value for name, value in fields.items() if is_history_field(name)}

    tracker = make_tracker()
    tracker.record_success("a.example", 10, "HTTPS")
    tracker.push()
    bucket = clock.now // FIVE
    assert bucket_fields() == {f"b{bucket}": "1", "B": f"{bucket}|0,0,0,0,0,0,0,0,0"}
    clock.advance(FIVE)  # a new bucket: the next write closes the old one in push.lua
    tracker.record_success("a.example", 20, "HTTPS")
    tracker.record_success("a.example", 20, "HTTPS")
    tracker.push()
    assert bucket_fields() == {  # the old one went with its base; the counters before
        f"b{bucket + 1}": "1",
        "B": f"{bucket + 1}|0,0,0,0,1,0,1,0,10",
    }
    start = clock.now // FIVE * FIVE
    first = {"success_https": 1, "successful_deliveries": 1, "total_latency_ms": 10}
    second = {"success_https": 2, "successful_deliveries": 2, "total_latency_ms": 40}
    assert by_start(tracker.history("a.example", "1h")) == {start - FIVE: first, start: second}
    clock.advance(FIVE)
    closer(redis_url, namespace).close()
    assert bucket_fields() == {}  # the closing removed it with the base
    assert by_start(tracker.history("a.example", "1h")) == {start - FIVE: first, start: second}
    tracker.record_success("a.example", 30, "HTTPS")  # a first write in its bucket again
    tracker.push()
    third = {"success_https": 1, "successful_deliveries": 1, "total_latency_ms": 30}
    assert by_start(tracker.history("a.example", "1h"))[start + FIVE] == third


def test_series_memory_is_bounded_by_the_caps(
    make_tracker: MakeTracker,
    clock: Clock,
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
) -> None:
    tracker = make_tracker()
    keys = NamespaceKeys(namespace)
    names = [f"m{i}.example" for i in range(300)]
    leader = closer(redis_url, namespace, top=10)
    for _bucket in range(6):
        for index, name in enumerate(names):
            tracker.record_success(name, index, "HTTPS")
        tracker.push()
        clock.advance(FIVE)
        leader.close()
    day = clock.now // 86_400
    assert (clock.now - 6 * FIVE) // 86_400 == day  # the six buckets lie in one day
    series = [keys.shard_for(name).domain_day(name, day) for name in names]
    kept = [key for key in series if redis_client.exists(key)]
    assert len(kept) == 10  # the same ten most active every bucket
    assert sum(str(redis_client.get(key)).count(";") for key in kept) == 10 * 6
    assert all(0 < redis_client.ttl(key) <= 8 * 86_400 for key in kept)
    used = sum(redis_client.memory_usage(key) or 0 for key in kept)
    assert bases_left(RedisEngine.wrap(redis_client), keys, names) == 0
    for shard in keys.shards:
        assert redis_client.hlen(shard.series_closed) == 0
        used += redis_client.memory_usage(shard.series_minutes) or 0
    assert used < 64_000  # ten domains' 6 buckets and the shards' recent buckets

    # two days later the cluster hashes hold their caps' worth, no more
    for _hour in range(50):
        tracker.record_failure("m0.example", "HTTP")
        tracker.push()
        clock.advance(3_600)
        leader.close()
    minutes = redis_client.hkeys(keys.history_minutes)
    oldest = min(int(field) for field in minutes if field != "upto")
    assert oldest * MINUTE >= clock.now - 48 * 3_600 - MINUTE
    for shard in keys.shards:  # a shard keeps three hours before its newest bucket at most
        fields = [f for f in redis_client.hkeys(shard.series_minutes) if f != "last"]
        assert len(fields) <= 180 * 9
    busy = keys.shard_for("m0.example").series_minutes
    newest = int(redis_client.hget(busy, "last") or 0)
    assert all(int(f.split(":")[0]) > newest - 180 for f in redis_client.hkeys(busy) if f != "last")


def test_history_rejects_a_bad_window_or_domain(make_tracker: MakeTracker) -> None:
    tracker = make_tracker()
    for window in ("2h", "", "1H", 3600):
        with pytest.raises(InvalidWindowError, match="1h, 24h, 7d"):
            tracker.history(window=window)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            tracker.history("a.example", window)  # type: ignore[arg-type]
    with pytest.raises(InvalidDomainError):
        tracker.history("bad domain!")
    with pytest.raises(InvalidDomainError):
        tracker.watch("")


def test_the_flusher_leader_closes_the_buckets(
    make_tracker: MakeTracker, clock: Clock, redis_url: str, namespace: str, sqlite_url: str
) -> None:
    from fedtrack_redis import Flusher

    tracker = make_tracker()
    keys = NamespaceKeys(namespace)
    tracker.record_failure("f.example", "HTTPS")
    tracker.push()
    clock.advance(FIVE)
    with Flusher(redis_url, sqlite_url, namespace=namespace) as flusher:
        flusher.flush_once()
    engine = RedisEngine.open(redis_url)
    client = engine.node_for(keys.history_minutes)
    assert int(client.hget(keys.history_minutes, "upto")) >= (clock.now - FIVE) // MINUTE
    shard = keys.shard_for("f.example")
    day = (clock.now - FIVE) // 86_400
    assert str(client.get(shard.domain_day("f.example", day))).count(";") == 1
    assert sums(tracker.history("f.example", "1h")) == {"failed_https": 1}
    assert sums(tracker.history(window="24h")) == {"failed_https": 1}


def test_a_reader_keeps_what_it_read_and_notices_a_lost_history(
    make_tracker: MakeTracker,
    clock: Clock,
    redis_url: str,
    namespace: str,
    redis_client: redis.Redis,
) -> None:
    tracker = make_tracker()
    keys = NamespaceKeys(namespace)
    tracker.record_failure("c.example", "HTTP")
    tracker.push()
    clock.advance(FIVE)
    closer(redis_url, namespace).close()
    tracker.record_failure("c.example", "HTTP")
    tracker.push()
    for window in ("1h", "24h", "7d", "1h"):  # read twice: the second from what it kept
        assert sums(tracker.history(window=window)) == {"failed_http": 2}
    clock.advance(MINUTE)
    closer(redis_url, namespace).close()
    assert sums(tracker.history(window="1h")) == {"failed_http": 2}
    for key in (keys.history_minutes, keys.history_fives):  # Redis lost the history
        redis_client.delete(key)
    for shard in keys.shards:
        redis_client.delete(shard.series_minutes)
    assert sums(tracker.history(window="1h")) == {}
    assert sums(tracker.history(window="7d")) == {}


def test_series_on_every_engine(
    engine_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = NamespaceKeys(namespace)
    engine = RedisEngine.open(engine_url)
    try:
        for shard in keys.shards:
            engine.node_for(shard.hydrated).set(shard.hydrated, "1")
        events = workload(9, 40, 600)
        with FederationTracker(engine_url, namespace=namespace, push_interval=3600) as tracker:
            replay(tracker, events)
            tracker.push()
            expected = expected_totals(events)
            cluster: dict[str, int] = {}
            for fields in expected.values():
                merge(cluster, counted(fields))
            assert sums(tracker.history(window="1h")) == cluster
            for domain, fields in expected.items():
                assert sums(tracker.history(domain, "24h")) == counted(fields)
            real = history.server_time
            monkeypatch.setattr(history, "server_time", lambda client: real(client) + FIVE)
            SeriesCloser(engine, Scripts(engine), keys).close()  # the bucket is over now
            assert sums(tracker.history(window="1h")) == cluster
            assert sums(tracker.history(window="7d")) == cluster
            for domain, fields in expected.items():  # 40 domains: all kept
                assert sums(tracker.history(domain, "1h")) == counted(fields)
            assert bases_left(engine, keys, expected) == 0
            for shard in keys.shards:
                assert engine.node_for(shard.base).hlen(shard.series_closed) == 0
    finally:
        for client in engine.primaries():
            for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
                client.delete(key)
        engine.close()
