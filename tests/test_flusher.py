"""Flusher: convergence (G5), election and fencing (G4), snapshot reads, lifecycle."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import hydrate
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import BackendUnavailableError, ConfigurationError
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.keys import NamespaceKeys, shard_of
from fedtrack_redis.scripts import Scripts
from fedtrack_redis.snapshot import EpochReader
from fedtrack_redis.store import stats as store_stats
from flusher_helpers import (
    MIMIC_WORKER,
    TRACKER_WORKER,
    db_acks,
    db_stats,
    engine,
    event_deltas,
    expected_totals,
    keys,
    leaders,
    make_engine,
    make_flusher,
    mimic_expected,
    pg_engine,
    push,
    redis_stats,
    run_python,
    totals,
    tracker_expected,
    wait_for_leader,
)
from servers import free_port, wait_for

__all__ = ["engine", "keys", "make_flusher", "pg_engine"]

MakeFlusher = Callable[..., Flusher]


def all_domains(client: redis.Redis, keys: NamespaceKeys) -> list[str]:
    found: list[str] = []
    for shard in keys.shards:
        found += client.zrange(shard.active, 0, -1)
    return sorted(found)


def assert_converged(client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine) -> None:
    domains = all_domains(client, keys)
    assert db_stats(engine) == redis_stats(client, keys, domains)


def test_tracker_workers_converge_then_nothing_to_write(
    redis_url: str,
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    database_url: str,
    make_flusher: MakeFlusher,
) -> None:
    """4 worker processes (real trackers) record a known mix and close; one flush makes
    every row equal its Redis hash."""
    with make_engine(database_url) as engine:
        hydrate.hydrate_shards(redis_client, keys, engine)  # as the flusher leader does first
    workers = [0, 1, 2, 3]
    processes = [
        run_python(TRACKER_WORKER, redis_url, keys.namespace, str(worker)) for worker in workers
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err

    flusher = make_flusher(database_url)
    domains = all_domains(redis_client, keys)
    assert len(domains) == 250
    assert flusher.flush_once() == len(domains)
    with make_engine(database_url) as engine:
        rows = db_stats(engine)
        assert rows == redis_stats(redis_client, keys, domains)  # field for field
        summed = totals(rows)
        expected = tracker_expected(workers)
        histogram = expected.pop("histogram")
        assert {name: summed[name] for name in expected} == expected
        assert sum(v for k, v in summed.items() if k.startswith("h")) == histogram
        assert flusher.flush_once() == 0
        # The acks were persisted with the data they produced.
        acks = {
            (shard.shard, worker): int(seq)
            for shard in keys.shards
            for worker, seq in redis_client.hgetall(shard.acks).items()
        }
        assert len(acks) >= 4 * 16
        assert db_acks(engine) == acks


def test_mimic_workers_converge(
    redis_url: str,
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    make_flusher: MakeFlusher,
) -> None:
    """The same with the push.lua stand-in: exact per-batch deltas."""
    hydrate.hydrate_shards(redis_client, keys, engine)
    workers = [f"worker-{n}" for n in range(4)]
    batches = 6
    processes = [
        run_python(MIMIC_WORKER, redis_url, keys.namespace, worker, str(batches))
        for worker in workers
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    flusher = make_flusher(engine)
    domains = all_domains(redis_client, keys)
    assert flusher.flush_once() == len(domains)
    rows = db_stats(engine)
    assert rows == redis_stats(redis_client, keys, domains)
    expected = expected_totals(mimic_expected(workers, batches))
    assert {name: totals(rows).get(name, 0) for name in expected} == expected
    assert flusher.flush_once() == 0


def test_only_changed_domains_are_written(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    flusher = make_flusher(engine)
    assert flusher.flush_once() == 0  # hydrates the empty namespace, takes the lead
    assert flusher.is_leader
    domains = [f"c{i}.example" for i in range(40)]
    push(redis_client, keys, "w", 1, event_deltas(1, domains))
    assert flusher.flush_once() == 40
    before = db_stats(engine)
    push(redis_client, keys, "w", 2, event_deltas(2, domains[:3]))
    assert flusher.flush_once() == 3
    after = db_stats(engine)
    assert {d for d in domains if after[d] != before[d]} == set(domains[:3])
    assert after == redis_stats(redis_client, keys, domains)
    assert flusher.flush_once() == 0


def test_an_epoch_is_one_instant_copied_on_write(
    redis_client: redis.Redis, keys: NamespaceKeys, pg_engine: sa.Engine
) -> None:
    """flush_begin freezes the epoch; a write after it copies the old hash into `snap`
    first; the reader gives every domain as it was at the close; flush_end is fenced."""
    hydrate.hydrate_shards(redis_client, keys, pg_engine)
    domains = [f"s{i}.example" for i in range(200)]
    push(redis_client, keys, "w", 1, event_deltas(3, domains))
    shard_index = shard_of(domains[0])
    sk = keys.shards[shard_index]
    in_shard = sorted(d for d in domains if shard_of(d) == shard_index)
    at_close = redis_stats(redis_client, keys, in_shard)
    reader = EpochReader(
        RedisEngine.wrap(redis_client), Scripts(RedisEngine.wrap(redis_client)), keys, page=7
    )
    opened = reader.open(fence=41)
    assert sk in opened
    assert not redis_client.exists(sk.changed, sk.epoch_acks)
    assert sorted(redis_client.smembers(sk.flushing)) == in_shard
    assert redis_client.hgetall(sk.flush_acks) == {"w": "1"}
    # Writes after the close: the first one copies each touched hash into snap.
    touched = in_shard[:5]
    push(redis_client, keys, "w", 2, {d: {"failed_smtp": 100} for d in touched})
    push(redis_client, keys, "w", 3, {d: {"failed_smtp": 100} for d in touched})
    assert sorted(redis_client.hkeys(sk.snap)) == touched
    assert not redis_client.smembers(sk.flushing) & set(touched)
    assert sorted(redis_client.smembers(sk.changed)) == touched  # the next epoch
    lines = [line for page in reader.lines(sk) for line in page]
    read = {line.split("\t")[0]: store_stats.parse_line(line) for line in lines}
    assert sorted(read) == in_shard
    for domain in in_shard:
        assert read[domain]["failed_smtp"] == at_close[domain]["failed_smtp"], domain
        assert int(read[domain]["last_active"].timestamp()) == at_close[domain]["last_active"]
    assert reader.acks(sk, 99) == [(shard_index, "w", 1, 99)]
    # Resuming hands the epoch to a newer flusher: the old one can no longer end it.
    assert sk in reader.open(fence=42)
    assert reader.end([sk], fence=41) == 0
    assert redis_client.exists(sk.flush_state)
    assert reader.end([sk], fence=42) == 1
    assert not redis_client.exists(sk.flush_state, sk.flushing, sk.snap, sk.flush_acks)
    assert sorted(redis_client.smembers(sk.changed)) == touched


def test_totals_and_acks_persisted_together_are_of_one_instant(
    redis_client: redis.Redis, keys: NamespaceKeys, pg_engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    """A worker adds 1 to one domain per chunk (seq n holds n) while flushes run: at
    every commit the row equals the ack persisted with it, whatever interleaving."""
    flusher = make_flusher(pg_engine)
    flusher.flush_once()
    shard = keys.shard_for("counter.example").shard
    stop = threading.Event()
    pushed = [0]

    def pusher() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            push(redis_client, keys, "w", seq, {"counter.example": {"failed_smtp": 1}})
            pushed[0] = seq

    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        checked = 0
        while checked < 15:
            flusher.flush_once()
            rows, acks = db_stats(pg_engine), db_acks(pg_engine)
            if "counter.example" in rows:
                assert rows["counter.example"]["failed_smtp"] == acks[(shard, "w")]
                checked += 1
    finally:
        stop.set()
        thread.join()
    flusher.flush_once()
    assert db_stats(pg_engine)["counter.example"]["failed_smtp"] == pushed[0]


def test_an_epoch_left_open_is_resumed_by_the_next_leader(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    first = make_flusher(engine, lock_ttl=1.0)
    first.flush_once()
    domains = [f"o{i}.example" for i in range(60)]
    push(redis_client, keys, "w", 1, event_deltas(1, domains))

    def die(point: str) -> None:
        if point == "before_commit":
            raise RuntimeError("killed between its read and its commit")

    first._hook = die
    with pytest.raises(RuntimeError):
        first.flush_once()
    assert db_stats(engine) == {}
    assert any(redis_client.exists(shard.flush_state) for shard in keys.shards)
    redis_client.delete(keys.flusher_lock)  # its lock lapses
    second = make_flusher(engine)
    push(redis_client, keys, "w", 2, event_deltas(2, domains[:10]))  # during the open epoch
    assert second.flush_once() == 60  # the same snapshot, read again
    assert second.flush_once() == 10  # then the next epoch
    assert_converged(redis_client, keys, engine)


def test_missing_hash_is_never_written(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    flusher = make_flusher(engine)
    flusher.flush_once()
    redis_client.sadd(keys.shard_for("ghost.example").changed, "ghost.example")
    assert flusher.flush_once() == 0
    assert db_stats(engine) == {}
    ghost = keys.shard_for("ghost.example")
    assert not redis_client.exists(ghost.changed, ghost.flushing, ghost.flush_state)


def test_fenced_out_leader_writes_nothing_and_its_epoch_waits(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    make_flusher: MakeFlusher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flusher = make_flusher(engine, lock_ttl=30)
    flusher.flush_once()
    domains = [f"f{i}.example" for i in range(30)]
    push(redis_client, keys, "w", 1, event_deltas(1, domains))

    def newer_leader_takes_over(point: str) -> None:
        if point == "before_transaction":  # after reading the changed sets
            redis_client.set(keys.flusher_lock, "someone-else", px=30_000)
            with engine.begin() as connection:
                store_stats.bump_fence(connection)

    flusher._hook = newer_leader_takes_over
    with caplog.at_level(logging.WARNING, "fedtrack_redis.flusher"):
        assert flusher.flush_once() == 0
    flusher._hook = None
    assert "is no longer the newest" in caplog.text
    assert not flusher.is_leader
    assert db_stats(engine) == {}
    assert sum(redis_client.scard(shard.flushing) for shard in keys.shards) == len(domains)
    assert redis_client.get(keys.flusher_lock) == "someone-else"
    # Once the other leader is gone, it leads again (new token) and writes everything.
    redis_client.delete(keys.flusher_lock)
    assert flusher.flush_once() == len(domains)
    assert_converged(redis_client, keys, engine)


def test_token_taken_by_a_hydration_is_replaced(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    flusher = make_flusher(engine, lock_ttl=30)
    flusher.flush_once()
    domains = [f"t{i}.example" for i in range(10)]
    push(redis_client, keys, "w", 1, event_deltas(1, domains))
    with engine.begin() as connection:  # what another process's hydrate_shards does
        store_stats.bump_fence(connection)
    # Still holding the lock: the flush is refused once, then retried with a new token.
    assert flusher.flush_once() == len(domains)
    assert flusher.is_leader
    assert_converged(redis_client, keys, engine)


def test_election_one_leader_then_handover(pg_engine: sa.Engine, make_flusher: MakeFlusher) -> None:
    flushers = [make_flusher(pg_engine, interval=0.1, lock_ttl=1.0).start() for _ in range(2)]
    wait_for_leader(flushers, 3)
    flushers.append(make_flusher(pg_engine, interval=0.1, lock_ttl=1.0).start())
    deadline = time.monotonic() + 1.5
    samples = []
    while time.monotonic() < deadline:
        samples.append(leaders(flushers))
        time.sleep(0.005)
    assert max(samples) == 1
    assert samples.count(1) / len(samples) > 0.99
    for _round in range(2):
        leader = wait_for_leader(flushers, 3)
        started = time.monotonic()
        leader.stop()
        assert not leader.is_leader
        remaining = [f for f in flushers if f is not leader]
        wait_for_leader(remaining, 1.0)
        assert time.monotonic() - started < 1.0  # released on stop: well within the TTL
        flushers = remaining
        assert leaders(flushers) == 1


def test_a_leader_whose_trust_ran_out_between_calls_keeps_its_lock(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    """flush_once() with no renewal thread: a long pause between two calls lets the
    process's own trust in the lock run out before Redis expires the key; the lock is
    still ours, so the next call extends it and flushes instead of waiting for it."""
    flusher = make_flusher(engine)
    assert flusher.flush_once() == 0
    election = flusher._election
    assert election is not None
    election._valid_until = 0.0  # as after a pause longer than the trusted part of the TTL
    assert not flusher.is_leader
    push(redis_client, keys, "w", 1, event_deltas(1, ["a.example", "b.example"]))
    assert flusher.flush_once() == 2
    assert flusher.is_leader


def test_standby_flush_once_returns_zero(
    redis_client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine, make_flusher: MakeFlusher
) -> None:
    leader = make_flusher(engine)
    standby = make_flusher(engine)
    assert leader.flush_once() == 0
    push(redis_client, keys, "w", 1, event_deltas(1, ["a.example", "b.example"]))
    assert standby.flush_once() == 0
    assert not standby.is_leader
    assert leader.flush_once() == 2


def test_background_thread_flushes_and_stop_flushes_last(
    redis_client: redis.Redis,
    keys: NamespaceKeys,
    engine: sa.Engine,
    make_flusher: MakeFlusher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fedtrack_redis.flusher")
    flusher = make_flusher(engine, interval=0.2, lock_ttl=2).start()
    assert flusher.start() is flusher
    domains = [f"b{i}.example" for i in range(20)]
    wait_for(lambda: flusher.is_leader, 5, "the only flusher leads")
    wait_for(lambda: not hydrate.missing_shards(redis_client, keys), 5, "the leader hydrates")
    assert set(push(redis_client, keys, "w", 1, event_deltas(1, domains)).values()) == {1}

    def flushed() -> int:  # the flush logs its rows once its epochs ended, after the commit
        return sum(int(n) for n in re.findall(r"flushed (\d+) rows", caplog.text))

    wait_for(
        lambda: len(db_stats(engine)) == 20 and flushed() >= 20, 5, "the thread flushes, says so"
    )
    assert_converged(redis_client, keys, engine)
    assert "leadership acquired" in caplog.text
    assert flushed() == 20  # in one flush, or split by one that ran during the push

    slow = make_flusher(engine, interval=3600, lock_ttl=2)
    flusher.stop()
    slow.start()
    wait_for(lambda: slow.is_leader, 5, "the other flusher takes over")
    push(redis_client, keys, "w", 2, event_deltas(2, domains[:5]))
    slow.stop()  # final flush
    slow.stop()  # idempotent
    assert slow.flush_once() == 0
    assert not slow.is_leader
    assert not redis_client.exists(keys.flusher_lock)
    assert_converged(redis_client, keys, engine)


def test_unreachable_backends(
    namespace: str, sqlite_url: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    flusher = Flusher(dead_redis, sqlite_url, namespace=namespace)
    with pytest.raises(BackendUnavailableError):
        flusher.flush_once()
    flusher.stop()
    # A thread with a dead backend keeps running and logs.
    caplog.set_level(logging.WARNING, "fedtrack_redis.flusher")
    flusher = Flusher(dead_redis, postgres_url, namespace=namespace, interval=0.05).start()
    wait_for(lambda: caplog.text.count("Redis unavailable") >= 2, 10, "two failed ticks logged")
    assert flusher._thread is not None and flusher._thread.is_alive()
    assert not flusher.is_leader
    flusher.stop()


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError):
        Flusher("redis://127.0.0.1:6379/0", "sqlite://", interval=0)
    with pytest.raises(ConfigurationError):
        Flusher("redis://127.0.0.1:6379/0", "sqlite://", lock_ttl=-1)
    with pytest.raises(ConfigurationError):
        Flusher("redis://127.0.0.1:6379/0", "sqlite://", namespace="bad ns")
    stopped = Flusher("redis://127.0.0.1:6379/0", "sqlite://")
    stopped.stop()
    with pytest.raises(ConfigurationError):
        stopped.start()
