"""Delivery health end to end on a real Redis: every transition of docs/health.md with a
fast `HealthPolicy`, across trackers and across processes (G12)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from fedtrack_redis import FederationTracker
from fedtrack_redis.errors import ConfigurationError, InvalidDomainError
from fedtrack_redis.health import HealthPolicy
from fedtrack_redis.keys import NamespaceKeys
from servers import wait_for
from tracker_helpers import finish_child, make_tracker, mark_hydrated, read_line, start_child

__all__ = ["make_tracker"]

FAST = HealthPolicy(failures=3, backoff_min=2.0, backoff_max=8.0, unavailable_after=3, period=60.0)
Make = Callable[..., FederationTracker]


def fail(tracker: FederationTracker, domain: str, times: int = 1, transport: str = "SMTP") -> None:
    for _ in range(times):
        tracker.record_failure(domain, transport)
    tracker.push()


def held(client: redis.Redis, namespace: str, domain: str) -> float | None:
    shard = NamespaceKeys(namespace).shard_for(domain)
    return client.zscore(shard.held, domain)


def test_backoff_after_n_consecutive_failures(
    make_tracker: Make, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(health=FAST)
    assert tracker.health("never.example") is None
    fail(tracker, "down.example", 2)
    health = tracker.health("down.example")
    assert health is not None and health.state == "healthy"
    assert health.consecutive_failures == 2 and health.failing_since is not None
    assert tracker.should_attempt("down.example")
    assert held(redis_client, namespace, "down.example") is None
    fail(tracker, "down.example")
    health = tracker.health("down.example")
    assert health is not None and health.state == "backoff"
    assert health.consecutive_failures == 3 and health.failure_periods == 1
    assert health.next_attempt_at is not None
    assert not tracker.should_attempt("down.example")
    assert not tracker.should_attempt("DOWN.example.")  # any spelling
    assert held(redis_client, namespace, "down.example") == pytest.approx(
        health.next_attempt_at * 1000
    )


def test_the_pushing_worker_follows_its_own_push_before_push_returns(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    for _ in range(3):
        tracker.record_failure("own.example", "HTTPS")
    tracker.push()
    assert not tracker.should_attempt("own.example")


def test_backoff_is_seen_in_another_process_within_a_second(
    make_tracker: Make, redis_url: str, namespace: str, redis_client: redis.Redis
) -> None:
    mark_hydrated(redis_client, namespace)
    child = start_child(
        f"""
        import time
        from fedtrack_redis import FederationTracker
        t = FederationTracker({redis_url!r}, namespace={namespace!r}, push_interval=0.05)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and t._view.stale:
            time.sleep(0.005)
        print("ready", flush=True)
        start = time.monotonic()
        while t.should_attempt("far.example") and time.monotonic() - start < 5:
            time.sleep(0.0005)
        print("held", time.monotonic() - start, t.should_attempt("far.example"), flush=True)
        t.close()
        """
    )
    try:
        assert read_line(child) == "ready"
        tracker = make_tracker(health=FAST)
        started = time.monotonic()
        fail(tracker, "far.example", 3)
        line = read_line(child).split()
        elapsed = time.monotonic() - started
        assert line[0] == "held" and line[2] == "False"
        assert elapsed < 1.0 + 0.5  # the child's own clock says float(line[1])
        assert float(line[1]) < 1.5
    finally:
        finish_child(child)


def test_the_jittered_interval_stays_within_its_bounds(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    domains = [f"j{i}.example" for i in range(60)]
    for domain in domains:
        for _ in range(3):
            tracker.record_failure(domain, "SMTP")
    tracker.push()
    intervals = []
    for domain in domains:
        health = tracker.health(domain)
        assert health is not None and health.next_attempt_at and health.failing_since
        intervals.append(health.next_attempt_at - health.failing_since)
    assert all(0.8 * 2.0 - 0.002 <= i <= 1.4 * 2.0 + 0.002 for i in intervals), intervals
    assert len({round(i, 3) for i in intervals}) > 10  # jittered, not one value


def test_the_interval_doubles_per_further_failure_up_to_the_cap(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    for extra, base in ((0, 2.0), (1, 4.0), (2, 8.0), (3, 8.0), (6, 8.0)):
        domain = f"g{extra}.example"
        fail(tracker, domain, 3 + extra)
        health = tracker.health(domain)
        assert health is not None and health.state == "backoff"
        assert health.next_attempt_at is not None and health.failing_since is not None
        interval = health.next_attempt_at - health.failing_since  # all in one push
        assert 0.8 * base - 0.002 <= interval <= 1.4 * base + 0.002, (extra, interval)


def test_unavailable_once_failures_span_the_periods(make_tracker: Make) -> None:
    policy = HealthPolicy(
        failures=2, backoff_min=0.2, backoff_max=3.0, unavailable_after=3, period=0.3
    )
    tracker = make_tracker(health=policy)

    def failed_into_unavailable() -> bool:
        fail(tracker, "gone.example")
        health = tracker.health("gone.example")
        return health is not None and health.state == "unavailable"

    wait_for(failed_into_unavailable, 5, "3 distinct periods of failures make it unavailable")
    health = tracker.health("gone.example")
    assert health is not None and health.failure_periods >= 3
    assert health.next_attempt_at is not None
    assert 2.0 <= health.next_attempt_at - time.time() <= 3.0 + 0.01  # backoff_max, no jitter
    assert not tracker.should_attempt("gone.example")


def test_an_outbound_success_heals_everywhere(make_tracker: Make) -> None:
    writer = make_tracker(health=FAST)
    other = make_tracker()
    fail(writer, "heal.example", 3)
    wait_for(lambda: not other.should_attempt("heal.example"), 2, "other sees the backoff")
    writer.record_failure("heal.example", "SMTP")
    writer.record_success("heal.example", 12, "HTTPS")  # the order recorded: success last
    writer.push()
    assert writer.should_attempt("heal.example")
    wait_for(lambda: other.should_attempt("heal.example"), 2, "other sees the heal")
    health = writer.health("heal.example")
    assert health is not None and health.state == "healthy" and health.consecutive_failures == 0


def test_failures_after_a_success_in_the_same_push_count_from_zero(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    fail(tracker, "order.example", 2)
    tracker.record_success("order.example", 3, "SMTP")
    tracker.record_failure("order.example", "SMTP")
    tracker.record_failure("order.example", "SMTP")
    tracker.push()
    health = tracker.health("order.example")
    assert health is not None and health.state == "healthy" and health.consecutive_failures == 2


def test_an_inbound_success_never_heals(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    fail(tracker, "quiet.example", 3)
    tracker.record_success("quiet.example", 4)  # inbound
    tracker.push()
    health = tracker.health("quiet.example")
    assert health is not None and health.state == "backoff"
    assert not tracker.should_attempt("quiet.example")


def test_permanent_failures_never_hold_back(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    for _ in range(10):
        tracker.record_failure("strict.example", "SMTP", permanent=True)
    tracker.push()
    health = tracker.health("strict.example")
    assert health is not None and health.state == "healthy" and health.consecutive_failures == 0
    stat = tracker.get("strict.example")
    assert stat is not None and stat.failed_smtp == 10  # counted in the stats
    fail(tracker, "strict.example", 2)
    tracker.record_failure("strict.example", "SMTP", permanent=True)  # neither counts nor resets
    tracker.push()
    health = tracker.health("strict.example")
    assert health is not None and health.consecutive_failures == 2


def test_reset_makes_a_domain_healthy_everywhere(
    make_tracker: Make, redis_client: redis.Redis, namespace: str
) -> None:
    writer = make_tracker(health=FAST)
    other = make_tracker()
    fail(writer, "reset.example", 4)
    wait_for(lambda: not other.should_attempt("reset.example"), 2, "other sees the backoff")
    assert other.reset_health("RESET.example") == "backoff"
    assert other.should_attempt("reset.example")
    wait_for(lambda: writer.should_attempt("reset.example"), 2, "writer sees the reset")
    health = writer.health("reset.example")
    assert health is not None and health.state == "healthy"
    assert held(redis_client, namespace, "reset.example") is None
    assert writer.reset_health("reset.example") is None  # nothing to reset
    with pytest.raises(InvalidDomainError):
        writer.reset_health("bad domain")


def test_should_attempt_never_raises(make_tracker: Make) -> None:
    tracker = make_tracker(health=FAST)
    fail(tracker, "x.example", 3)
    for value in ("", "bad domain", "a" * 300, None, 3, ["x"]):
        assert tracker.should_attempt(value) is True  # type: ignore[arg-type]


def test_a_different_policy_is_refused_at_the_first_push(make_tracker: Make) -> None:
    make_tracker(health=FAST).push()
    other = make_tracker(health=HealthPolicy(failures=5))
    other.record_failure("a.example", "SMTP")
    with pytest.raises(ConfigurationError, match="differs"):
        other.push()
    follower = make_tracker()
    follower.record_failure("b.example", "SMTP")
    follower.push()
    assert follower.health_policy == FAST


def test_should_attempt_answers_from_memory_while_redis_is_stopped(
    make_tracker: Make, namespace: str
) -> None:
    from servers import RedisServer

    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        mark_hydrated(client, namespace)
        client.close()
        tracker = make_tracker(redis=server.url, health=FAST)
        fail(tracker, "mem.example", 3)
        assert not tracker.should_attempt("mem.example")
        server.stop()
        started = time.perf_counter()
        answers = [tracker.should_attempt("mem.example") for _ in range(1000)]
        answers.append(tracker.should_attempt("fine.example"))
        assert time.perf_counter() - started < 0.1
        assert answers[:-1] == [False] * 1000 and answers[-1] is True
    finally:
        server.close()


def test_health_reaches_another_tracker_on_every_engine(engine_url: str, namespace: str) -> None:
    from fedtrack_redis.engine import RedisEngine

    engine = RedisEngine.open(engine_url)
    keys = NamespaceKeys(namespace)
    for shard in keys.shards:
        engine.node_for(shard.hydrated).set(shard.hydrated, "0", nx=True)
    writer = FederationTracker(engine_url, namespace=namespace, push_interval=0.05, health=FAST)
    reader = FederationTracker(engine_url, namespace=namespace, push_interval=0.05)
    domains = [f"e{i}.example" for i in range(40)]  # every shard
    try:
        wait_for(lambda: not reader._view.stale, 10, "the reader's view is synced")
        for domain in domains:
            for _ in range(3):
                writer.record_failure(domain, "SMTP")
        writer.push()
        wait_for(lambda: not any(reader.should_attempt(d) for d in domains), 2, "held everywhere")
        for domain in domains:
            writer.record_success(domain, 5, "SMTP")
        writer.push()
        wait_for(lambda: all(reader.should_attempt(d) for d in domains), 2, "healed everywhere")
    finally:
        writer.close()
        reader.close()
        for client in engine.primaries():
            for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
                client.delete(key)
        engine.close()
