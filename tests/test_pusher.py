"""pusher.Pusher through its own interface: a Recorder, an engine, a namespace (real Redis)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis

from fedtrack_redis.batch import Recorder
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.errors import BackendUnavailableError
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.metrics import PUSH_LATE
from fedtrack_redis.pusher import LATE_WARNING, Pusher
from servers import free_port
from tracker_helpers import counters, mark_hydrated


@pytest.fixture
def make_pusher(redis_url: str, namespace: str) -> Iterator[object]:
    made: list[tuple[Pusher, RedisEngine]] = []

    def make(recorder: Recorder, url: str = redis_url, **options: object) -> Pusher:
        engine = RedisEngine.open(url)
        pusher = Pusher(
            recorder,
            engine,
            NamespaceKeys(namespace),
            str(options.pop("worker", "w1")),
            interval=3600,
            lease_ttl=30,
            **options,  # type: ignore[arg-type]
        )
        made.append((pusher, engine))
        return pusher

    yield make
    for pusher, engine in made:
        pusher.stop()
        engine.close()


def test_push_sends_everything_and_counts_fields(
    make_pusher: object, redis_client: redis.Redis, namespace: str
) -> None:
    mark_hydrated(redis_client, namespace)
    recorder = Recorder()
    pusher = make_pusher(recorder)  # type: ignore[operator]
    for index in range(300):
        recorder.record_failure(f"p{index}.example", "HTTPS")
    assert pusher.pending_domains() == 300
    pusher.push(timeout=10)
    assert pusher.pending_domains() == 0
    assert pusher.stats.chunks >= 16 and pusher.stats.fields == 300 * 2  # counter + stamp
    assert counters(redis_client, namespace, "p7.example")["failed_https"] == 1


def test_an_unhydrated_namespace_keeps_everything_pending(
    make_pusher: object, redis_client: redis.Redis, namespace: str
) -> None:
    recorder = Recorder()
    pusher = make_pusher(recorder)  # type: ignore[operator]
    recorder.record_failure("u.example", "SMTP")
    with pytest.raises(BackendUnavailableError):
        pusher.push(timeout=0.3)
    assert pusher.pending_domains() == 1 and pusher.stats.refused >= 1
    mark_hydrated(redis_client, namespace)
    pusher.push(timeout=5)
    assert counters(redis_client, namespace, "u.example")["failed_smtp"] == 1


def test_the_identity_learnt_from_an_ack_guards_later_pushes(
    make_pusher: object, redis_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    for shard in keys.shards:
        redis_client.set(shard.hydrated, "a" * 32)
    recorder = Recorder()
    pusher = make_pusher(recorder)  # type: ignore[operator]
    recorder.record_failure("g.example", "SMTP")
    pusher.push(timeout=5)
    assert pusher.identity == "a" * 32
    for shard in keys.shards:  # Redis now names another database
        redis_client.set(shard.hydrated, "b" * 32)
    recorder.record_failure("g.example", "SMTP")
    with pytest.raises(BackendUnavailableError):
        pusher.push(timeout=0.3)
    assert counters(redis_client, namespace, "g.example")["failed_smtp"] == 1  # refused, kept
    assert pusher.pending_domains() == 1


def test_a_pinned_identity_is_expected_from_the_first_push(
    make_pusher: object, redis_client: redis.Redis, namespace: str
) -> None:
    for shard in NamespaceKeys(namespace).shards:
        redis_client.set(shard.hydrated, "b" * 32)
    recorder = Recorder()
    pusher = make_pusher(recorder, database_id="a" * 32)  # type: ignore[operator]
    recorder.record_failure("g.example", "SMTP")
    with pytest.raises(BackendUnavailableError):
        pusher.push(timeout=0.3)
    assert counters(redis_client, namespace, "g.example")["failed_smtp"] == 0


def test_redis_down_keeps_everything_and_the_hot_path_unaffected(make_pusher: object) -> None:
    recorder = Recorder()
    pusher = make_pusher(recorder, url=f"redis://127.0.0.1:{free_port()}/0")  # type: ignore[operator]
    recorder.record_success("d.example", 10, "HTTP")
    with pytest.raises(BackendUnavailableError):
        pusher.push(timeout=0.3)
    recorder.record_success("d.example", 10, "HTTP")  # still recording, into the next batch
    # one sealed chunk and one new batch row, both for d.example: nothing dropped
    assert pusher.pending_domains() == 2 and pusher.stats.failures >= 1


def _hold_the_interpreter_lock(seconds: float) -> None:
    """Run one C call that never releases the interpreter lock for about `seconds`."""
    size = 1_000_000
    started = time.perf_counter()
    sum(range(size))
    per_item = (time.perf_counter() - started) / size
    sum(range(int(seconds / per_item)))


def test_a_starved_push_thread_says_so(
    redis_client: redis.Redis, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    mark_hydrated(redis_client, namespace)
    engine = RedisEngine.open(redis_url)
    pusher = Pusher(Recorder(), engine, NamespaceKeys(namespace), "w1", interval=0.05, lease_ttl=30)
    late_before = PUSH_LATE._value.get()
    pusher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="fedtrack_redis.push"):
            for _ in range(5):  # the thread may be mid-cycle when the hold starts
                _hold_the_interpreter_lock(1.0)
                deadline = time.monotonic() + 5
                while not pusher.stats.late_wakeups and time.monotonic() < deadline:
                    time.sleep(0.01)
                if pusher.stats.late_wakeups:
                    break
        assert pusher.stats.late_wakeups >= 1
        assert PUSH_LATE._value.get() - late_before > LATE_WARNING
        assert any("push thread woke up" in record.message for record in caplog.records)
    finally:
        pusher.stop()
        engine.close()
