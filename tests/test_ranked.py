"""ranked.py: every shard's sorted index read as one order (highest score first, equal
scores by name), in small chunks, equals a sort of every entry; a name filter paged from
the activity index equals the database's page (real Redis, real PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from conftest import upgrade_schema
from fedtrack_redis import FederationTracker, Flusher
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.ranked import walk
from fedtrack_redis.reads import StatsReader, page, read_all
from fedtrack_redis.store import search


def fill(client: Any, keys: NamespaceKeys, count: int, scores: int) -> list[tuple]:
    """`count` members over the shards' activity indexes, `scores` distinct scores (so
    long runs of equal scores, cut by the chunks); every entry, sorted as the API sorts."""
    rng = random.Random(3)
    entries = []
    for index in range(count):
        domain = f"d{rng.randrange(10**6):06d}-{index}.example"
        shard = keys.shard_for(domain)
        score = float(rng.randrange(scores))
        client.zadd(shard.active, {domain: score})
        entries.append((domain, score, shard.shard))
    return sorted(entries, key=lambda entry: (-entry[1], entry[0]))


@pytest.fixture
def engine(redis_url: str) -> Iterator[RedisEngine]:
    opened = RedisEngine.open(redis_url)
    yield opened
    opened.close()


@pytest.fixture
def any_engine(engine_url: str) -> Iterator[RedisEngine]:
    opened = RedisEngine.open(engine_url)
    yield opened
    opened.close()


def walked(engine: RedisEngine, keys: NamespaceKeys, **chunks: int) -> list[tuple]:
    return [
        (domain, score, shard.shard)
        for domain, score, shard in walk(engine, keys.shards, lambda s: s.active, **chunks)
    ]


@pytest.mark.parametrize("scores", [1, 7, 1000])
def test_the_walk_equals_a_sort_of_every_entry(
    any_engine: RedisEngine, namespace: str, scores: int
) -> None:
    keys = NamespaceKeys(namespace)
    expected = fill(any_engine.client, keys, 700, scores)
    # chunks of 2 to 8: runs of equal scores span many chunks of a shard
    assert walked(any_engine, keys, first=2, largest=8) == expected
    assert walked(any_engine, keys) == expected


def test_an_index_changing_under_the_walk_repeats_and_skips_nothing_that_stayed(
    engine: RedisEngine, redis_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    expected = fill(redis_client, keys, 400, 50)
    entries = walk(engine, keys.shards, lambda s: s.active, first=2, largest=4)
    head = [next(entries)[0] for _ in range(100)]
    # as pushes do: domains not read yet become the most active, one is new
    moved = {domain for domain, _score, _shard in expected[200:260]}
    for domain in moved | {"new.example"}:
        redis_client.zadd(keys.shard_for(domain).active, {domain: 10_000.0})
    rest = [domain for domain, _score, _shard in entries]
    got = head + rest
    assert len(got) == len(set(got)), "an entry came twice"
    stayed = [domain for domain, _score, _shard in expected if domain not in moved]
    assert [domain for domain in got if domain not in moved] == stayed


def test_a_page_cut_inside_a_run_of_equal_activity_is_by_name(
    redis_url: str, engine: RedisEngine, namespace: str, sqlite_url: str
) -> None:
    flusher = Flusher(redis_url, upgrade_schema(sqlite_url), namespace=namespace)
    flusher.flush_once()
    keys = NamespaceKeys(namespace)
    with FederationTracker(redis_url, namespace=namespace, push_interval=3600) as tracker:
        for index in range(600):  # one push: a run of equal activity across every shard
            tracker.touch(f"t{index}.example")
        tracker.push()
        flusher.stop()
    everyone = sorted(read_all(engine, keys), key=lambda s: (-s.last_active, s.domain))
    for offset, limit in ((0, 10), (5, 50), (290, 100), (590, 50)):
        got, total = page(engine, keys, "activity", limit, offset)
        assert total == 600
        names = [s.domain for s in everyone[offset : offset + limit]]
        assert [s.domain for s in got] == names


@pytest.fixture
def searched(
    redis_url: str, namespace: str, migrated_postgres_url: str
) -> Iterator[tuple[StatsReader, sa.Engine]]:
    """2,000 domains in Redis and flushed to PostgreSQL, in 40 pushes (runs of equal
    activity), a third under mx*, the rest under mail*, a quarter failing (runs of equal
    failures), two thirds with a latency, some queued; the reader and the database."""
    flusher = Flusher(redis_url, migrated_postgres_url, namespace=namespace)
    flusher.flush_once()
    # the worker stays up through the test: closing it would release its queues
    with FederationTracker(redis_url, namespace=namespace, push_interval=3600) as tracker:
        for index in range(2000):
            domain = f"{'mx' if index % 3 == 0 else 'mail'}{index}.example{index % 7}.org"
            tracker.touch(domain)
            for _ in range(index % 5 + 1 if index % 4 == 0 else 0):
                tracker.record_failure(domain, "SMTP")
            if index % 3 != 1:
                tracker.record_success(domain, 20 + index % 40, "HTTPS")
            for _ in range(index % 7 + 1 if index % 5 == 0 else 0):
                tracker.increment_queue(domain)
            if index % 50 == 49:
                tracker.push()
        tracker.push()
        assert flusher.flush_once() == 2000
        flusher.stop()
        reader = StatsReader(redis_url, namespace=namespace, database=migrated_postgres_url)
        database = sa.create_engine(migrated_postgres_url)
        yield reader, database
        database.dispose()
        reader.close()


@pytest.mark.parametrize("text", ["mail", "mail1", "example3.org", "mx"])
def test_a_broad_filter_by_activity_pages_from_the_index_as_the_database_would(
    searched: tuple[StatsReader, sa.Engine], text: str
) -> None:
    reader, database = searched
    total = search.count_domains(database, text, 10_000)
    assert total > 250
    for offset, limit in ((0, 50), (30, 20), (200, 100)):
        expected = search.find_domains(database, text, limit, offset, "activity")
        assert len(expected) == min(limit, total - offset)
        assert reader.matching("activity", text, limit, offset) == expected
        # counted past the cap, a search reads the index; under it, the database
        assert reader.search(text, limit, offset, cap=10, order="activity") == (expected, 10)
        assert reader.search(text, limit, offset, order="activity") == (expected, total)


@pytest.mark.parametrize("order", ["failures", "latency", "queued"])
def test_a_broad_filter_by_a_top_list_pages_from_it_as_the_database_would(
    searched: tuple[StatsReader, sa.Engine], order: str
) -> None:
    reader, database = searched
    answered = 0
    for text in ("mail", "mx", "example3.org"):
        for offset, limit in ((0, 10), (5, 20), (300, 100)):
            expected = search.find_domains(database, text, limit, offset, order)
            walked = reader.matching(order, text, limit, offset)
            # None: the page lies past a shard's list (domains of score 0 are not in it)
            assert walked in (None, expected)
            answered += walked is not None
            assert reader.search(text, limit, offset, cap=10, order=order) == (expected, 10)
    assert answered >= 3, "the first pages come from the lists"


def test_a_walk_over_its_budget_leaves_the_page_to_the_database(
    searched: tuple[StatsReader, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, database = searched
    expected = search.find_domains(database, "mx", 600, 0, "activity")
    assert len(expected) == 600
    # 600 of the 667 under mx lie deeper than the first 64 entries of a shard
    assert reader.matching("activity", "mx", 600, 0, budget=40) is None
    assert reader.matching("activity", "mx", 600, 0, budget=4000) == expected
    monkeypatch.setattr(StatsReader, "matching", lambda *_args, **_kw: None)
    assert reader.search("mx", 600, 0, cap=10, order="activity") == (expected, 10)


def test_a_member_moving_out_of_a_run_half_read_shifts_nothing(
    engine: RedisEngine, redis_client: redis.Redis, namespace: str
) -> None:
    shard = NamespaceKeys(namespace).shards[0]
    names = [f"m{index:02d}.example" for index in range(30)]
    redis_client.zadd(shard.active, {"a.example": 9.0, "b.example": 9.0})
    redis_client.zadd(shard.active, dict.fromkeys(names, 5.0))
    entries = walk(engine, [shard], lambda s: s.active, first=4, largest=4)
    # a and b, then the run of 5 in name order, read four at a time: m00 … m03
    head = [next(entries)[0] for _ in range(4)]
    assert head == ["a.example", "b.example", names[0], names[1]]
    redis_client.zadd(shard.active, {names[1]: 20.0})  # yielded already: the run shifts
    assert [domain for domain, _score, _shard in entries] == names[2:]


def test_a_member_that_moves_before_it_is_reached_is_not_listed_twice(
    engine: RedisEngine, redis_client: redis.Redis, namespace: str
) -> None:
    shard = NamespaceKeys(namespace).shards[0]
    names = [f"m{index:02d}.example" for index in range(30)]
    redis_client.zadd(shard.active, dict.fromkeys(names, 5.0))
    redis_client.zadd(shard.active, {"z.example": 1.0})
    entries = walk(engine, [shard], lambda s: s.active, first=4, largest=4)
    assert next(entries)[0] == names[0]
    # a domain not reached yet becomes the most active: it is above the walk now
    redis_client.zadd(shard.active, {names[20]: 20.0, "z.example": 30.0})
    rest = [domain for domain, _score, _shard in entries]
    assert rest == [name for name in names[1:] if name != names[20]]
