"""push.lua itself: at most once per (worker, seq), leases, the queue gauge, refusals.

Each scenario runs on fakeredis (Lua 5.4 through lupa) and on the real Redis (Lua 5.1),
so the script is checked on the engine that runs it in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from fedtrack_redis import scripts
from fedtrack_redis.batch import NOT_QUEUED
from fedtrack_redis.chunk import Chunk, seal
from fedtrack_redis.keys import NamespaceKeys

Push = Callable[..., list[int]]


@pytest.fixture
def push(script_client: redis.Redis, namespace: str) -> Push:
    """Call push.lua for shard 0 of the test namespace: push(seq, rows, worker=...)."""
    script = scripts.register(script_client, "push")
    shard = NamespaceKeys(namespace).shards[0]

    def call(
        seq: int,
        rows: list[tuple[str, list[Any]]],
        worker: str = "w1",
        retention: int = 600,
        identity: str = "",
        cap: int = 100_000,
        full: bool = False,
    ) -> list[Any]:
        chunk: Chunk = seal(shard, seq, worker, 30_000, retention, rows)
        reply = script(keys=list(chunk.keys), args=[*chunk.args, identity, cap])
        if full:
            return list(reply)
        return [int(v) for v in reply[:3]]

    return call


def row(
    success_https: int = 0, latency: int = 0, queued: int = NOT_QUEUED, **buckets: int
) -> list[Any]:
    histogram = {int(name[1:]): count for name, count in buckets.items()} or None
    return [0, 0, 0, 0, success_https, 0, 0, latency, queued, histogram]


@pytest.fixture
def shard0(namespace: str) -> Any:
    return NamespaceKeys(namespace).shards[0]


def test_push_refuses_an_unhydrated_shard(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    assert push(1, [("a.example", row(1, 100, 2, h5=1))], full=True) == [0, 0, 0, "", ""]
    assert script_client.exists(shard0.domain("a.example"), shard0.acks, shard0.leases) == 0


def test_push_applies_a_chunk_at_most_once(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    rows = [("a.example", row(2, 300, h30=2)), ("b.example", row())]
    status, _absent, fields = push(10, rows)
    assert status == 1
    assert fields == 4 + 1 + 1  # success_https, successful, total_latency, h30 + 2 last_active
    assert push(10, rows)[0] == 2  # the same chunk again: duplicate
    assert push(9, rows)[0] == 2  # an older one: duplicate too
    stored = script_client.hgetall(shard0.domain("a.example"))
    now = int(script_client.time()[0])
    stamp = stored.pop("a")  # last_active: the hash's fields are short (docs/redis-keys.md)
    assert stamp in {str(now), str(now - 1)}
    bucket = int(stamp) // 300
    assert stored.pop(f"b{bucket}") == "1"  # its history bucket (docs/history.md)
    assert stored.pop("B") == f"{bucket}|0,0,0,0,0,0,0,0,0"  # its base: nothing before
    assert stored == {"ss": "2", "d": "2", "l": "300", "h30": "2"}
    assert script_client.hget(shard0.acks, "w1") == "10"
    assert set(script_client.zrange(shard0.active, 0, -1)) == {"a.example", "b.example"}
    assert script_client.smembers(shard0.changed) == {"a.example", "b.example"}
    assert push(11, rows)[0] == 1
    assert script_client.hget(shard0.domain("a.example"), "ss") == "4"


def test_push_keeps_the_worker_lease_and_the_queue_gauge(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    key = shard0.domain("a.example")
    assert push(1, [("a.example", row(queued=3))])[:2] == [1, 1]  # no lease before
    assert push(1, [("a.example", row(queued=2))], worker="w2")[:2] == [1, 1]
    assert script_client.hget(key, "q") == "5"
    assert push(2, [("a.example", row(queued=1))])[:2] == [1, 0]  # lease held now
    assert script_client.hget(key, "q") == "3"
    assert script_client.hgetall(shard0.lease("w1")) == {"a.example": "1"}
    now_ms = int(script_client.time()[0]) * 1000
    expiry = script_client.zscore(shard0.leases, "w1")
    assert expiry is not None and now_ms + 28_000 < expiry < now_ms + 32_000
    assert push(3, [("a.example", row(queued=0))])[0] == 1
    assert script_client.hget(key, "q") == "2"
    assert script_client.exists(shard0.lease("w1")) == 0
    assert script_client.zscore(shard0.leases, "w1") is None  # nothing in flight: no lease


def test_push_never_takes_queued_messages_below_zero(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    push(1, [("a.example", row(queued=4))])
    script_client.hset(shard0.domain("a.example"), "q", 1)  # e.g. after hydrate
    push(2, [("a.example", row(queued=0))])
    assert script_client.hget(shard0.domain("a.example"), "q") == "0"


def test_push_refuses_a_malformed_chunk_whole(
    push: Push, script_client: redis.Redis, shard0: Any, namespace: str
) -> None:
    script_client.set(shard0.hydrated, "1")
    script = scripts.register(script_client, "push")
    good = seal(shard0, 1, "w1", 30_000, 600, [("a.example", row(1, 5))])
    bad_line = good.args[4] + "\nB.EXAMPLE|x||"
    keys = [*good.keys, shard0.domain("b.example")]
    tail = ["", 100]  # expected identity, ack cap

    def status(keys: list[str], args: list[Any]) -> int:
        return int(script(keys=keys, args=args)[0])

    assert status(keys, [*good.args[:4], bad_line, *tail]) == -1
    assert status(list(good.keys), [*good.args[:4], "a.example||1,2|", *tail]) == -1
    glued = "a.example||0,0,0,0,0,0,0,0,1|x.example||0,0,0,0,0,0,0,0,1|"
    assert status(list(good.keys), [*good.args[:4], glued, *tail]) == -1
    assert status(list(good.keys)[:11], [*good.args, *tail]) == -1
    assert status(list(good.keys), list(good.args)) == -1  # arguments missing
    assert script_client.exists(shard0.domain("a.example"), shard0.acks) == 0


def test_push_prunes_acks_of_long_silent_workers(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    push(1, [("a.example", row())], worker="old")
    script_client.zadd(shard0.ack_seen, {"old": 1000})
    push(1, [("a.example", row())], worker="new", retention=60)
    assert script_client.hkeys(shard0.acks) == ["new"]
    assert script_client.zrange(shard0.ack_seen, 0, -1) == ["new"]


def test_push_keeps_at_most_the_ack_cap(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    for index in range(12):
        push(1, [("a.example", row())], worker=f"w{index:02d}", cap=4)
    # Each call prunes a few of the oldest beyond the cap, never the pushing worker.
    assert script_client.zcard(shard0.ack_seen) <= 12 - 8 + 4
    assert script_client.hget(shard0.acks, "w11") == "1"
    assert script_client.hlen(shard0.acks) == script_client.zcard(shard0.ack_seen)


IDENTITY = "0123456789abcdef0123456789abcdef"


def test_push_refuses_a_shard_of_another_database(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, IDENTITY)
    other = "f" * 32
    assert push(1, [("a.example", row(1, 5))], identity=other, full=True) == [3, 0, 0, "", IDENTITY]
    assert script_client.exists(shard0.domain("a.example"), shard0.acks) == 0
    # The right identity, none yet, or a legacy marker: applied, and the marker says which.
    reply = push(1, [("a.example", row(1, 5))], identity=IDENTITY, full=True)
    assert (reply[0], reply[4]) == (1, IDENTITY)
    assert push(2, [("a.example", row(1, 5))], full=True)[0] == 1
    script_client.set(shard0.hydrated, "1700000000")
    assert push(3, [("a.example", row(1, 5))], identity=other, full=True)[0] == 1


def test_a_duplicate_answers_the_stored_seq(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    assert push(50, [("a.example", row(1, 5))], full=True)[3] == "50"
    assert push(50, [("a.example", row(1, 5))], full=True)[:4] == [2, 0, 0, "50"]
    assert push(7, [("a.example", row(1, 5))], full=True)[:4] == [2, 0, 0, "50"]


def test_an_empty_chunk_refreshes_the_lease(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    push(1, [("a.example", row(queued=1))])
    script_client.zadd(shard0.leases, {"w1": 5})
    assert push(2, [])[0] == 1
    score = script_client.zscore(shard0.leases, "w1")
    assert score is not None and score > 5
