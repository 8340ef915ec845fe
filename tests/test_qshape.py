"""The cluster-wide queue shape (qshape) against a real Redis: workers' ages carried with
their leases, summed per shard, read from the per-shard index by T (G8 for the ages)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis

from fedtrack_redis import FederationTracker, InvalidValueError, StatsReader, scripts
from fedtrack_redis.chunk import seal
from fedtrack_redis.keys import NamespaceKeys, ShardKeys
from fedtrack_redis.leases import reap_expired_leases
from fedtrack_redis.qshape import read_qshape
from servers import wait_for
from tracker_helpers import domain_hash, finish_child, make_tracker, read_line, start_child

__all__ = ["make_tracker"]  # fixture

MakeTracker = Callable[..., FederationTracker]
MINUTE = 60.0


def row(t: int, **columns: int) -> list[int]:
    """[T, c0..c9] from column names: row(3, c0=1, c2=2)."""
    counts = [0] * 10
    for name, count in columns.items():
        counts[int(name[1:])] = count
    return [t, *counts]


def test_counts_add_up_across_two_workers(make_tracker: MakeTracker) -> None:
    one, two = make_tracker(push_interval=3600), make_tracker(push_interval=3600)
    now = time.time()
    for _ in range(3):
        one.increment_queue("a.example")
    two.increment_queue("a.example", enqueued_at=now - 7 * MINUTE)
    two.increment_queue("b.example", enqueued_at=now - 2 * 1280 * MINUTE)
    one.push()
    two.push()
    assert one.qshape() == [("a.example", row(4, c0=3, c1=1)), ("b.example", row(1, c9=1))]
    assert two.qshape(top=1) == [("a.example", row(4, c0=3, c1=1))]


def test_ages_land_in_their_half_open_columns(make_tracker: MakeTracker) -> None:
    tracker = make_tracker(push_interval=3600)
    now = time.time()
    # each one a second inside its column, so the push's later clock cannot move it
    ages = [1, 299, 301, 599, 601, 21 * MINUTE, 41 * MINUTE, 81 * MINUTE, 161 * MINUTE]
    ages += [321 * MINUTE, 641 * MINUTE, 1279 * MINUTE, 1281 * MINUTE, 5000 * MINUTE]
    for age in ages:
        tracker.increment_queue("a.example", enqueued_at=now - age)
    tracker.push()
    assert tracker.qshape() == [("a.example", [14, 2, 2, 1, 1, 1, 1, 1, 1, 2, 2])]


def test_largest_t_first_ties_by_name_and_domains_without_messages_are_not_listed(
    make_tracker: MakeTracker,
) -> None:
    tracker = make_tracker(push_interval=3600)
    for name, count in [("m.example", 2), ("b.example", 5), ("z.example", 2), ("a.example", 2)]:
        for _ in range(count):
            tracker.increment_queue(name)
    tracker.increment_queue("gone.example")
    tracker.decrement_queue("gone.example")
    tracker.record_failure("idle.example", "smtp")
    tracker.push()
    assert [domain for domain, _ in tracker.qshape()] == [
        "b.example",
        "a.example",
        "m.example",
        "z.example",
    ]
    assert [domain for domain, _ in tracker.qshape(top=2)] == ["b.example", "a.example"]


def test_ties_at_the_cut_are_by_name_across_shards(make_tracker: MakeTracker) -> None:
    tracker = make_tracker(push_interval=3600)
    names = [f"d{i:03d}.example" for i in range(120)]  # several per shard
    for name in names:
        tracker.increment_queue(name)
    tracker.push()
    assert [domain for domain, _ in tracker.qshape(top=5)] == sorted(names)[:5]
    assert [domain for domain, _ in tracker.qshape(top=100)] == sorted(names)[:100]


def test_decrement_queue_removes_the_oldest(make_tracker: MakeTracker) -> None:
    tracker = make_tracker(push_interval=3600)
    now = time.time()
    tracker.increment_queue("a.example", enqueued_at=now - 30 * MINUTE)
    tracker.increment_queue("a.example")
    tracker.push()
    assert tracker.qshape() == [("a.example", row(2, c0=1, c3=1))]
    tracker.decrement_queue("a.example")
    tracker.push()
    assert tracker.qshape() == [("a.example", row(1, c0=1))]
    tracker.decrement_queue("a.example")
    tracker.push()
    assert tracker.qshape() == []


def test_a_message_moving_column_between_pushes_is_sent_again_without_a_touch(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=0.05)
    tracker.increment_queue("a.example", enqueued_at=time.time() - 5 * MINUTE + 0.5)
    tracker.push()
    assert tracker.qshape() == [("a.example", row(1, c0=1))]
    stamped = domain_hash(redis_client, namespace, "a.example")["last_active"]
    shard = NamespaceKeys(namespace).shard_for("a.example")
    redis_client.delete(shard.changed)
    # no call on the tracker: its push thread notices the message reached 5 minutes
    wait_for(lambda: tracker.qshape() == [("a.example", row(1, c1=1))], 5, "the move to 10")
    assert domain_hash(redis_client, namespace, "a.example")["last_active"] == stamped
    assert not redis_client.sismember(shard.changed, "a.example")  # ages are no event


def test_the_totals_row_covers_every_domain(make_tracker: MakeTracker, redis_url: str) -> None:
    tracker = make_tracker(push_interval=3600)
    now = time.time()
    for i in range(30):
        tracker.increment_queue(f"d{i}.example", enqueued_at=now - i * 100)
    tracker.push()
    reader = StatsReader(redis_url, namespace=tracker.namespace)
    try:
        shape = reader.qshape(top=3)
    finally:
        reader.close()
    assert len(shape.rows) == 3
    assert shape.total[0] == 30
    assert shape.total[1:] == [
        sum(1 for i in range(30) if lo <= i * 100 < hi)
        for lo, hi in [
            (0, 300),
            (300, 600),
            (600, 1200),
            (1200, 2400),
            (2400, 4800),
            (4800, 9600),
            (9600, 19200),
            (19200, 38400),
            (38400, 76800),
            (76800, 10**9),
        ]
    ]
    assert shape.to_dict()["columns"][0] == "T"
    assert shape.to_dict()["rows"][0] == {"domain": shape.rows[0][0], "counts": shape.rows[0][1]}


def test_close_takes_the_workers_share_away(make_tracker: MakeTracker) -> None:
    stays, leaves = make_tracker(push_interval=3600), make_tracker(push_interval=3600)
    stays.increment_queue("a.example")
    leaves.increment_queue("a.example", enqueued_at=time.time() - 50 * MINUTE)
    leaves.increment_queue("b.example")
    stays.push()
    leaves.push()
    assert stays.qshape() == [("a.example", row(2, c0=1, c4=1)), ("b.example", row(1, c0=1))]
    leaves.close()
    assert stays.qshape() == [("a.example", row(1, c0=1))]


def test_a_released_lease_takes_the_ages_and_the_worker_reasserts_them(
    make_tracker: MakeTracker, redis_client: redis.Redis, namespace: str
) -> None:
    tracker = make_tracker(push_interval=3600)
    tracker.increment_queue("a.example", enqueued_at=time.time() - 15 * MINUTE)
    tracker.increment_queue("b.example")
    tracker.push()
    keys = NamespaceKeys(namespace)
    for shard in keys.shards:  # as if the worker had been frozen past its lease TTL
        if redis_client.zscore(shard.leases, tracker.worker_id) is not None:
            redis_client.zadd(shard.leases, {tracker.worker_id: 1})
    assert reap_expired_leases(redis_client, keys) >= 1
    assert tracker.qshape() == []
    assert all(not redis_client.exists(s.lease_ages(tracker.worker_id)) for s in keys.shards)
    assert all(
        not redis_client.hgetall(s.qshape_total) or set(redis_client.hvals(s.qshape_total)) == {"0"}
        for s in keys.shards
    )
    tracker.increment_queue("c.example")  # the next push finds the lease gone: re-sends all
    tracker.push()
    assert tracker.qshape() == [
        ("a.example", row(1, c2=1)),
        ("b.example", row(1, c0=1)),
        ("c.example", row(1, c0=1)),
    ]


WORKER = """
    import signal, time
    from fedtrack_redis import FederationTracker
    redis_url, namespace = ARGS
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=0.05,
                                lease_ttl=2.0)
    now = time.time()
    for _ in range(3):
        tracker.increment_queue("a.example", enqueued_at=now - 700)
    tracker.increment_queue("b.example", enqueued_at=now - 100_000)
    tracker.push()
    print(tracker.worker_id, flush=True)
    while True:
        signal.pause()
"""


def test_a_sigkilled_workers_share_leaves_with_its_lease(
    make_tracker: MakeTracker, redis_url: str, namespace: str
) -> None:
    live = make_tracker(lease_ttl=2.0)
    live.increment_queue("a.example")
    live.push()
    child = start_child(WORKER.replace("ARGS", repr((redis_url, namespace))))
    try:
        read_line(child)
        assert live.qshape() == [("a.example", row(4, c0=1, c2=3)), ("b.example", row(1, c9=1))]
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        finish_child(child)
    # released by the live tracker's own reaper: TTL (2 s) + its reap period (1 s)
    wait_for(lambda: live.qshape() == [("a.example", row(1, c0=1))], 8, "the dead share to go")
    assert live.qshape() == [("a.example", row(1, c0=1))]


@pytest.mark.parametrize("bad", [0, -1, 1001, True, "20", 2.5])
def test_a_bad_top_is_refused(make_tracker: MakeTracker, bad: object) -> None:
    tracker = make_tracker(push_interval=3600)
    with pytest.raises(InvalidValueError, match="top"):
        tracker.qshape(bad)  # type: ignore[arg-type]


# -- the scripts alone (fakeredis's Lua and the real Redis's) --------------------------------


def push_chunk(
    client: redis.Redis,
    shard: ShardKeys,
    seq: int,
    worker: str,
    rows: dict[str, int],
    ages: dict[str, dict[int, int]],
) -> None:
    client.set(shard.hydrated, "1")
    taken = [(d, [0, 0, 0, 0, 0, 0, 0, 0, n, None]) for d, n in rows.items()]
    chunk = seal(shard, seq, worker, 30_000, 600, taken, ages=ages)
    push = scripts.register(client, "push")
    assert push(keys=list(chunk.keys), args=[*chunk.args, "", 100_000])[0] == 1


def test_push_and_release_keep_the_sums_exact_and_never_below_zero(
    script_client: redis.Redis, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    shard = keys.shard_for("a.example")
    push_chunk(script_client, shard, 1, "w1", {"a.example": 3}, {"a.example": {1: 2}})
    push_chunk(script_client, shard, 1, "w2", {"a.example": 2}, {"a.example": {1: 1, 9: 1}})
    assert script_client.hgetall(shard.qshape) == {"a.example|1": "3", "a.example|9": "1"}
    assert script_client.hgetall(shard.lease_ages("w2")) == {"a.example|1": "1", "a.example|9": "1"}
    assert script_client.zscore(shard.qshape_top, "a.example") == 5
    assert read_qshape(script_client, keys).rows == [("a.example", row(5, c0=1, c1=3, c9=1))]
    # absolute counts: the same columns again change nothing; a move is two fields
    push_chunk(script_client, shard, 2, "w1", {}, {"a.example": {1: 2}})
    push_chunk(script_client, shard, 3, "w1", {}, {"a.example": {1: 0, 2: 2}})
    assert script_client.hgetall(shard.qshape) == {
        "a.example|1": "1",
        "a.example|2": "2",
        "a.example|9": "1",
    }
    assert script_client.hgetall(shard.qshape_total) == {"1": "1", "2": "2", "9": "1"}
    script_client.hset(shard.qshape, "a.example|9", 0)  # as if a sum had been lost
    script_client.zadd(shard.leases, {"w2": 1})  # w2's lease expired
    assert reap_expired_leases(script_client, keys) == 1
    assert script_client.hgetall(shard.qshape) == {"a.example|2": "2"}  # never below 0
    assert not script_client.exists(shard.lease_ages("w2"))
    assert script_client.zscore(shard.qshape_top, "a.example") == 3
    assert read_qshape(script_client, keys).rows == [("a.example", row(3, c0=1, c2=2))]
    assert reap_expired_leases(script_client, keys) == 0  # exactly once
