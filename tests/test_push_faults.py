"""Exactly once under faults (G2, G3, G6), each on a throwaway Redis of its own:

* the reply of an applied chunk is lost (a proxy cuts the connection after Redis ran the
  script): the retry is recognised as a duplicate, nothing counts twice;
* Redis stops, then comes back empty: what was recorded meanwhile is pushed once the
  shard is hydrated again from the database (with what had been flushed before);
* a worker is SIGKILLed: it loses at most its last push interval.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from fedtrack_redis import BackendUnavailableError, FederationTracker
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.keys import shard_of
from proxy import CuttingProxy
from servers import RedisServer, wait_for
from tracker_helpers import counters, finish_child, mark_hydrated, start_child

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[RedisServer]:
    own = RedisServer().start()
    yield own
    own.close()


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    own = redis.Redis(port=server.port, decode_responses=True, socket_timeout=5)
    yield own
    own.close()


@pytest.fixture
def ns() -> str:
    return "f" + uuid.uuid4().hex[:10]


def test_a_lost_acknowledgement_is_retried_without_counting_twice(
    server: RedisServer, client: redis.Redis, ns: str, sqlite_url: str
) -> None:
    with CuttingProxy(server.port) as proxy:
        tracker = FederationTracker(proxy.url, namespace=ns, push_interval=3600)
        try:
            tracker.hydrate(sqlite_url)  # what the flusher leader does on a new namespace
            tracker.record_success("example.com", 100, "HTTPS")
            tracker.push()  # applies the first chunk
            proxy.cut_replies_to(b"EVALSHA", times=3)
            for _ in range(10):
                tracker.record_failure("example.com", "SMTP")
            tracker.increment_queue("example.com")
            pushing = threading.Thread(target=tracker.push)
            pushing.start()

            def record_while_retrying() -> bool:  # new events go to the next batch
                tracker.record_success("example.com", 50, "HTTP")
                return not proxy.armed

            wait_for(record_while_retrying, 30, "three cut replies", interval=0.001)
            later = tracker.get("example.com")  # read through the proxy while it retries
            pushing.join(30)
            assert not pushing.is_alive()
            tracker.record_success("example.com", 50, "HTTP")
            tracker.push()
            assert proxy.cuts == 3
            assert tracker.push_stats.duplicates >= 1
            stored = counters(client, ns, "example.com")
            assert stored["failed_smtp"] == 10
            assert stored["success_https"] == 1
            assert stored["queued_messages"] == 1
            assert stored["success_http"] * 50 + 100 == stored["total_latency_ms"]
            assert later is not None
        finally:
            tracker.close()
    assert counters(client, ns, "example.com")["queued_messages"] == 0


#: A domain in a shard that gets no event after the restart (its lease is re-asserted by
#: a heartbeat once another shard reports the loss).
QUEUED_ELSEWHERE = next(
    name
    for name in (f"q{i}.example" for i in range(100))
    if shard_of(name) not in {shard_of("before.example"), shard_of("during.example")}
)


def test_events_recorded_while_redis_is_down_arrive_once_it_is_back(
    server: RedisServer, client: redis.Redis, ns: str, sqlite_url: str
) -> None:
    tracker = FederationTracker(server.url, namespace=ns, push_interval=0.05)
    # The flusher leader hydrates the namespace, and again after Redis comes back empty.
    flusher = Flusher(server.url, sqlite_url, namespace=ns, interval=3600, lock_ttl=2.0)
    try:
        assert flusher.flush_once() == 0  # leads, hydrates the new namespace
        for _ in range(5):
            tracker.record_success("before.example", 20, "SMTP")
        tracker.increment_queue("before.example")
        tracker.increment_queue(QUEUED_ELSEWHERE)
        tracker.push()
        assert flusher.flush_once() >= 1  # PostgreSQL's (here SQLite's) durable copy
        flusher.start()
        server.kill()
        for _ in range(7):  # the hot path neither blocks nor raises meanwhile
            tracker.record_failure("during.example", "HTTPS")
            tracker.record_success("before.example", 30, "HTTP")
        with pytest.raises(BackendUnavailableError):
            tracker.push(timeout=0.5)
        server.start()  # same port, empty: no hydrated markers
        tracker.push(timeout=20)
        assert counters(client, ns, "during.example")["failed_https"] == 7
        before = counters(client, ns, "before.example")
        assert before["success_smtp"] == 5  # restored from the database, once
        assert before["success_http"] == 7
        assert before["total_latency_ms"] == 5 * 20 + 7 * 30
        # the lease went with the data: the worker re-asserts its in-flight counts
        tracker.push()
        assert counters(client, ns, "before.example")["queued_messages"] == 1
        assert counters(client, ns, QUEUED_ELSEWHERE)["queued_messages"] == 1
    finally:
        tracker.close()
        flusher.stop()


# The worker records flat out and prints its count every 0.5 ms: exactly the pattern that
# starves a push thread of the interpreter lock (docs/tracker.md, "Threads"), so it applies
# the cure that page gives; G3 assumes the push thread runs.
KILLED_WORKER = """
    import sys
    sys.setswitchinterval(0.001)
    from fedtrack_redis import FederationTracker
    redis_url, namespace = ARGS
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=0.2)
    tracker.record_failure("example.com", "HTTP")
    tracker.push()
    count = 1
    print(count, flush=True)
    while True:
        for _ in range(2000):
            tracker.record_failure("example.com", "HTTP")
        count += 2000
        print(count, flush=True)
"""


def test_a_killed_worker_loses_at_most_its_last_push_interval(
    server: RedisServer, client: redis.Redis, ns: str, sqlite_url: str
) -> None:
    interval, margin = 0.2, 1.0  # margin: a push in flight, scheduling on a busy machine
    mark_hydrated(client, ns)
    child = start_child(KILLED_WORKER.replace("ARGS", repr((server.url, ns))))
    progress: list[tuple[float, int]] = []
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # the worker runs (its imports may take a second)
        assert first, "the worker died"
        started = time.monotonic()
        progress.append((started, int(first)))
        while time.monotonic() - started < 2.0:
            line = child.stdout.readline()
            assert line, "the worker died"
            progress.append((time.monotonic(), int(line)))
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        child.wait(10)
    finally:
        finish_child(child)
    recorded_by_then = max(
        count for seen, count in progress if seen <= killed_at - interval - margin
    )
    stored = counters(client, ns, "example.com")["failed_http"]
    assert recorded_by_then <= stored <= progress[-1][1] + 2000
