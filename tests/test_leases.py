"""Queue leases (G8): a dead worker's in-flight count leaves queued_messages, a live one's
stays; lease_release.lua releases exactly once. Real Redis (fakeredis too for the script)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import redis

from fedtrack_redis import FederationTracker, scripts
from fedtrack_redis.chunk import seal
from fedtrack_redis.keys import NamespaceKeys, ShardKeys
from fedtrack_redis.leases import reap_expired_leases, server_time_ms
from servers import wait_for
from tracker_helpers import (
    counters,
    finish_child,
    lease_holders,
    make_tracker,
    read_line,
    start_child,
)

__all__ = ["make_tracker"]  # fixture

MakeTracker = Callable[..., FederationTracker]

DOMAINS = ["a.example", "b.example", "c.example", "d.example"]

WORKER = """
    import signal
    from fedtrack_redis import FederationTracker
    redis_url, namespace, domains = ARGS
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=0.05,
                                lease_ttl=2.0)
    for domain in domains:
        tracker.increment_queue(domain)
        tracker.increment_queue(domain)
    tracker.push()
    print(tracker.worker_id, flush=True)
    while True:
        signal.pause()
"""


def queued(client: redis.Redis, namespace: str) -> dict[str, int]:
    return {domain: counters(client, namespace, domain)["queued_messages"] for domain in DOMAINS}


def test_a_killed_worker_releases_its_in_flight_count_and_a_live_one_keeps_it(
    make_tracker: MakeTracker,
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    sqlite_url: str,
) -> None:
    live = make_tracker(lease_ttl=2.0)
    for domain in DOMAINS[:2]:
        live.increment_queue(domain)
    live.push()
    child = start_child(WORKER.replace("ARGS", repr((redis_url, namespace, DOMAINS))))
    try:
        dead_id = read_line(child)
        assert queued(redis_client, namespace) == {
            "a.example": 3,
            "b.example": 3,
            "c.example": 2,
            "d.example": 2,
        }
        assert lease_holders(redis_client, namespace) == {live.worker_id, dead_id}
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        finish_child(child)
    killed_at = server_time_ms(redis_client)
    # released by the live tracker's own reaper: TTL (2 s) + its reap period (1 s)
    wait_for(
        lambda: (
            queued(redis_client, namespace)
            == {"a.example": 1, "b.example": 1, "c.example": 0, "d.example": 0}
        ),
        8,
        "the dead worker's lease to be released",
    )
    assert lease_holders(redis_client, namespace) == {live.worker_id}
    # the live worker's lease outlives several TTLs without any new event (heartbeats)
    wait_for(lambda: server_time_ms(redis_client) > killed_at + 4_500, 8, "two more lease TTLs")
    reap_expired_leases(redis_client, NamespaceKeys(namespace))
    assert queued(redis_client, namespace)["a.example"] == 1
    assert lease_holders(redis_client, namespace) == {live.worker_id}


def test_a_worker_whose_lease_was_released_reasserts_its_counts(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=3600)
    for domain in DOMAINS:
        tracker.increment_queue(domain)
    tracker.push()
    keys = NamespaceKeys(namespace)
    for shard in keys.shards:  # as if the worker had been frozen past its TTL
        if redis_client.zscore(shard.leases, tracker.worker_id) is not None:
            redis_client.zadd(shard.leases, {tracker.worker_id: 1})
    assert reap_expired_leases(redis_client, keys) >= 1
    assert queued(redis_client, namespace) == dict.fromkeys(DOMAINS, 0)
    tracker.increment_queue("a.example")  # the next push finds the lease gone: it checks
    tracker.push()  # every leased shard and re-sends all its in-flight counts
    assert queued(redis_client, namespace) == {**dict.fromkeys(DOMAINS, 1), "a.example": 2}
    assert lease_holders(redis_client, namespace) == {tracker.worker_id}


def test_a_message_delivered_while_the_first_lease_is_taken_leaves_no_count_behind(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    # Found by the cluster benchmark: the chunk that creates the lease reports it absent;
    # a message delivered before that reply is handled must still come off the gauge.
    tracker = make_tracker(push_interval=3600)
    queues = tracker._pusher._queues
    acknowledged = queues.acknowledged

    def delivered_meanwhile(chunk: Any, applied: bool, lease_absent: bool) -> None:
        if chunk.leased:
            tracker.decrement_queue("a.example")
        acknowledged(chunk, applied, lease_absent)

    tracker.increment_queue("a.example")
    queues.acknowledged = delivered_meanwhile  # type: ignore[method-assign]
    tracker.push()
    queues.acknowledged = acknowledged  # type: ignore[method-assign]
    assert queued(redis_client, namespace)["a.example"] == 1
    tracker.push()
    assert queued(redis_client, namespace)["a.example"] == 0
    tracker.close()
    assert queued(redis_client, namespace)["a.example"] == 0


# -- lease_release.lua ------------------------------------------------------------------------


def lease(client: redis.Redis, shard: ShardKeys, worker: str, counts: dict[str, int]) -> None:
    """Give `worker` a lease on `shard` through push.lua, then make it expired."""
    client.set(shard.hydrated, "1")
    rows = [(d, [0, 0, 0, 0, 0, 0, 0, 0, n, None]) for d, n in counts.items()]
    chunk = seal(shard, 1, worker, 30_000, 600, rows)
    push = scripts.register(client, "push")
    assert push(keys=list(chunk.keys), args=[*chunk.args, "", 100_000])[0] == 1
    client.zadd(shard.leases, {worker: 1000})


def test_concurrent_reapers_release_a_lease_exactly_once(
    script_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    shard = keys.shard_for("a.example")
    lease(script_client, shard, "ghost", {"a.example": 3})
    lease(script_client, shard, "alive", {"a.example": 2})
    script_client.zadd(shard.leases, {"alive": server_time_ms(script_client) + 60_000})
    released: list[int] = []

    def reap() -> None:
        released.append(reap_expired_leases(script_client, keys))

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(released) == 1
    assert script_client.hget(shard.domain("a.example"), "q") == "2"
    assert script_client.exists(shard.lease("ghost")) == 0
    assert script_client.zrange(shard.leases, 0, -1) == ["alive"]
    assert "a.example" in script_client.smembers(shard.changed)
    assert reap_expired_leases(script_client, keys) == 0


def test_release_refuses_a_renewed_lease_and_a_stale_domain_list(
    script_client: redis.Redis, namespace: str
) -> None:
    shard = NamespaceKeys(namespace).shard_for("a.example")
    lease(script_client, shard, "w", {"a.example": 3})
    release = scripts.register(script_client, "lease_release")
    fixed = [
        shard.leases,
        shard.lease("w"),
        shard.changed,
        shard.flushing,
        shard.snap,
        shard.totals,
        shard.top_queued,
        shard.lease_ages("w"),
        shard.qshape,
        shard.qshape_top,
        shard.qshape_total,
    ]
    assert release(keys=fixed, args=["w"]) == -1  # the lease holds a.example: read again
    script_client.zadd(shard.leases, {"w": server_time_ms(script_client) + 60_000})
    assert release(keys=[*fixed, shard.domain("a.example")], args=["w", "a.example"]) == 0
    assert release(keys=fixed, args=["nobody"]) == 0
    script_client.zadd(shard.leases, {"w": 1})
    assert release(keys=[*fixed, shard.domain("a.example")], args=["w", "a.example"]) == 1
    assert script_client.hget(shard.domain("a.example"), "q") == "0"


def test_release_never_takes_queued_messages_below_zero(
    script_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    shard = keys.shard_for("a.example")
    lease(script_client, shard, "w", {"a.example": 5})
    script_client.hset(shard.domain("a.example"), "q", 2)
    assert reap_expired_leases(script_client, keys) == 1
    assert script_client.hget(shard.domain("a.example"), "q") == "0"


def test_invalid_worker_ids_in_the_lease_index_are_left_alone(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    redis_client.zadd(keys.shards[0].leases, {"bad worker}": 1})
    assert reap_expired_leases(redis_client, keys) == 0
