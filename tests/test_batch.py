"""The hot path (Recorder), the chunk format and push.lua itself.

Recorder and chunk tests are pure unit tests. The push.lua tests run each scenario on
fakeredis (Lua 5.4 through lupa) and on the real Redis (Lua 5.1), so the script is
checked on the engine that runs it in production.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from fedtrack_redis import InvalidDomainError, InvalidTransportError, scripts
from fedtrack_redis.batch import (
    FAILED_HTTPS,
    INBOUND,
    LATENCY,
    NOT_QUEUED,
    QUEUED,
    SUCCESS_HTTPS,
    SUCCESS_SMTP,
    Recorder,
)
from fedtrack_redis.chunk import Chunk, pack_command, seal
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.stats import bucket_of

# -- Recorder -------------------------------------------------------------------------------


def merged(recorder: Recorder) -> dict[str, tuple[list[Any], dict[int, int]]]:
    """Swap the batch and merge spellings: normalized domain → (row[:9], buckets)."""
    batch = recorder.swap()
    result: dict[str, tuple[list[Any], dict[int, int]]] = {}
    if batch is None:
        return result
    for name, row, buckets in batch.domains():
        if name in result:
            held, held_buckets = result[name]
            for index in range(LATENCY + 1):
                held[index] += row[index]
            if row[QUEUED] != NOT_QUEUED:
                held[QUEUED] = row[QUEUED]
            for bucket, count in buckets.items():
                held_buckets[bucket] = held_buckets.get(bucket, 0) + count
        else:
            result[name] = (row[:9], dict(buckets))
    return result


def test_queue_clamps_at_zero_at_every_step() -> None:
    recorder = Recorder()
    recorder.decrement_queue("a.example")
    recorder.decrement_queue("a.example")
    recorder.increment_queue("a.example")
    assert recorder.inflight_snapshot() == {"a.example": 1}
    assert merged(recorder)["a.example"][0][QUEUED] == 1
    recorder.decrement_queue("A.Example.")
    assert recorder.inflight_snapshot() == {}
    assert merged(recorder)["a.example"][0][QUEUED] == 0


def test_rows_of_several_spellings_merge_into_one_domain() -> None:
    recorder = Recorder()
    recorder.record_success("Example.COM", 150, "HTTPS")
    recorder.record_success("example.com.", 250, "https")
    recorder.record_success("example.com", 100)
    recorder.record_failure("EXAMPLE.com", "Https")
    recorder.touch("[1.2.3.4]")
    rows = merged(recorder)
    assert set(rows) == {"example.com", "1.2.3.4"}
    row, buckets = rows["example.com"]
    assert row[SUCCESS_HTTPS] == 2
    assert row[INBOUND] == 1
    assert row[FAILED_HTTPS] == 1
    assert row[LATENCY] == 500
    assert row[QUEUED] == NOT_QUEUED
    assert buckets == {bucket_of(150): 1, bucket_of(250): 1}  # inbound not in the histogram
    assert rows["1.2.3.4"][0][:9] == [0, 0, 0, 0, 0, 0, 0, 0, NOT_QUEUED]


def test_histogram_beyond_the_first_bucket_goes_to_the_batch_dict() -> None:
    recorder = Recorder()
    for latency in (10, 10, 500, 500, 500, 0.2, 10**9):
        recorder.record_success("a.example", latency, "SMTP")
    row, buckets = merged(recorder)["a.example"]
    assert row[SUCCESS_SMTP] == 7
    assert buckets == {bucket_of(10): 2, bucket_of(500): 3, 0: 1, 100: 1}


@pytest.mark.parametrize("transport", ["", "FTP", "http ", "\u017fmtp", None, 3, "HTTPX"])
def test_failure_with_an_unknown_transport_records_nothing(transport: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidTransportError):
        recorder.record_failure("a.example", transport)
    assert recorder.swap() is None


@pytest.mark.parametrize("transport", ["FTP", "smtps", None])
def test_success_with_an_unknown_transport_records_nothing(transport: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidTransportError):
        recorder.record_success("a.example", 5, transport)
    assert recorder.swap() is None


@pytest.mark.parametrize(
    "latency", [-1, -0.001, math.nan, math.inf, -math.inf, "12", None, 10**13, [1]]
)
def test_bad_latencies_raise_value_error_and_record_nothing(latency: Any) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError):
        recorder.record_success("a.example", latency, "HTTP")
    assert recorder.swap() is None


@pytest.mark.parametrize("domain", ["", "   ", "a..b", "-a.example", "a b.example", "x" * 300])
def test_invalid_domains_raise_and_record_nothing(domain: str) -> None:
    recorder = Recorder()
    for call in (
        lambda: recorder.record_success(domain, 1, "HTTP"),
        lambda: recorder.record_failure(domain, "SMTP"),
        lambda: recorder.touch(domain),
        lambda: recorder.increment_queue(domain),
        lambda: recorder.decrement_queue(domain),
    ):
        with pytest.raises(InvalidDomainError):
            call()
    assert recorder.swap() is None
    assert recorder.inflight_snapshot() == {}


def test_non_string_domains_raise_invalid_domain() -> None:
    recorder = Recorder()
    for domain in ([1], {"a": 1}, None, 42):
        with pytest.raises(InvalidDomainError):
            recorder.record_success(domain, 1, "HTTP")  # type: ignore[arg-type]
        with pytest.raises(InvalidDomainError):
            recorder.increment_queue(domain)  # type: ignore[arg-type]
    assert recorder.swap() is None


def test_the_lock_is_released_after_an_error() -> None:
    recorder = Recorder()
    with pytest.raises(InvalidDomainError):
        recorder.record_failure("bad domain", "HTTP")
    recorder.record_failure("good.example", "HTTP")  # would dead-lock otherwise
    assert "good.example" in merged(recorder)


def test_float_latencies_are_summed_exactly_within_a_batch() -> None:
    recorder = Recorder()
    recorder.record_success("a.example", 0.25, "HTTP")
    recorder.record_success("a.example", 0.5, "HTTP")
    recorder.record_success("a.example", True, "HTTP")  # type: ignore[arg-type]
    assert merged(recorder)["a.example"][0][LATENCY] == 1.75


def test_many_threads_record_exact_totals() -> None:
    recorder = Recorder()
    threads = 8
    per_thread = 5_000
    swapped: list[dict[str, tuple[list[Any], dict[int, int]]]] = []
    stop = threading.Event()

    def swapper() -> None:  # swap concurrently, like the pusher does
        while not stop.is_set():
            swapped.append(merged(recorder))

    def work(index: int) -> None:
        for i in range(per_thread):
            domain = f"d{i % 50}.example"
            recorder.record_success(domain, 100, "HTTPS")
            recorder.record_failure(domain, "SMTP")
            recorder.increment_queue(domain)

    swapping = threading.Thread(target=swapper)
    swapping.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    swapping.join()
    swapped.append(merged(recorder))
    successes = sum(row[SUCCESS_HTTPS] for part in swapped for row, _b in part.values())
    latency = sum(row[LATENCY] for part in swapped for row, _b in part.values())
    histogram = sum(sum(b.values()) for part in swapped for _row, b in part.values())
    assert successes == threads * per_thread
    assert latency == 100 * threads * per_thread
    assert histogram == threads * per_thread
    assert sum(recorder.inflight_snapshot().values()) == threads * per_thread


def test_release_inflight_sets_every_count_to_zero() -> None:
    recorder = Recorder()
    recorder.increment_queue("a.example")
    recorder.increment_queue("b.example")
    merged(recorder)
    assert recorder.release_inflight() == 2
    rows = merged(recorder)
    assert {name: row[QUEUED] for name, (row, _b) in rows.items()} == {
        "a.example": 0,
        "b.example": 0,
    }
    assert recorder.inflight_snapshot() == {}


# -- chunk format -----------------------------------------------------------------------------


def test_seal_encodes_one_line_per_domain() -> None:
    shard = NamespaceKeys("ns").shards[3]
    chunk = seal(
        shard,
        42,
        "worker-1",
        30_000,
        600,
        [
            ("a.example", [1, 0, 0, 2, 0, 0, 1, 10.6, NOT_QUEUED, {5: 2}]),
            ("b.example", [0, 0, 0, 0, 0, 0, 0, 0, 3, None]),
        ],
    )
    assert chunk.keys[:7] == (
        shard.hydrated,
        shard.acks,
        shard.ack_seen,
        shard.active,
        shard.changed,
        shard.leases,
        shard.lease("worker-1"),
    )
    assert chunk.keys[7:11] == (shard.flushing, shard.snap, shard.epoch_acks, shard.totals)
    assert chunk.keys[11:] == (shard.domain("a.example"), shard.domain("b.example"))
    assert chunk.args[:4] == ("worker-1", "42", "30000", "600")
    assert chunk.args[4].split("\n") == [
        "a.example||1,0,0,2,0,0,3,1,11|5:2",
        "b.example|3|0,0,0,0,0,0,0,0,0|",
    ]
    assert chunk.leased == ("b.example",)
    assert chunk.domains == 2


def test_pack_command_is_resp() -> None:
    assert pack_command("SET", "k", "") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"


# -- push.lua on fakeredis and on Redis ----------------------------------------------------


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
    assert stored.pop("last_active") in {str(now), str(now - 1)}
    assert stored == {
        "success_https": "2",
        "successful_deliveries": "2",
        "total_latency_ms": "300",
        "h30": "2",
    }
    assert script_client.hget(shard0.acks, "w1") == "10"
    assert set(script_client.zrange(shard0.active, 0, -1)) == {"a.example", "b.example"}
    assert script_client.smembers(shard0.changed) == {"a.example", "b.example"}
    assert push(11, rows)[0] == 1
    assert script_client.hget(shard0.domain("a.example"), "success_https") == "4"


def test_push_keeps_the_worker_lease_and_the_queue_gauge(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    key = shard0.domain("a.example")
    assert push(1, [("a.example", row(queued=3))])[:2] == [1, 1]  # no lease before
    assert push(1, [("a.example", row(queued=2))], worker="w2")[:2] == [1, 1]
    assert script_client.hget(key, "queued_messages") == "5"
    assert push(2, [("a.example", row(queued=1))])[:2] == [1, 0]  # lease held now
    assert script_client.hget(key, "queued_messages") == "3"
    assert script_client.hgetall(shard0.lease("w1")) == {"a.example": "1"}
    now_ms = int(script_client.time()[0]) * 1000
    expiry = script_client.zscore(shard0.leases, "w1")
    assert expiry is not None and now_ms + 28_000 < expiry < now_ms + 32_000
    assert push(3, [("a.example", row(queued=0))])[0] == 1
    assert script_client.hget(key, "queued_messages") == "2"
    assert script_client.exists(shard0.lease("w1")) == 0
    assert script_client.zscore(shard0.leases, "w1") is None  # nothing in flight: no lease


def test_push_never_takes_queued_messages_below_zero(
    push: Push, script_client: redis.Redis, shard0: Any
) -> None:
    script_client.set(shard0.hydrated, "1")
    push(1, [("a.example", row(queued=4))])
    script_client.hset(shard0.domain("a.example"), "queued_messages", 1)  # e.g. after hydrate
    push(2, [("a.example", row(queued=0))])
    assert script_client.hget(shard0.domain("a.example"), "queued_messages") == "0"


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


# -- ShardQueues: what the pusher seals ------------------------------------------------------


def sealed_lines(queues: Any, recorder: Recorder) -> dict[str, str]:
    """Swap, absorb and seal every shard; domain → its chunk line."""
    batch = recorder.swap()
    if batch is not None:
        queues.absorb(batch)
    lines: dict[str, str] = {}
    for chunk in queues.heads():
        queues.acknowledged(chunk, applied=True, lease_absent=False)
        for line in chunk.args[4].split("\n"):
            if line:
                lines[line.split("|")[0]] = line
    return lines


def test_an_unchanged_in_flight_count_is_not_sent_again() -> None:
    from fedtrack_redis.pending import ShardQueues

    recorder = Recorder()
    queues = ShardQueues(recorder, NamespaceKeys("ns"), "w1", lease_ttl=30)
    recorder.increment_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == "1"
    recorder.increment_queue("a.example")  # queued and delivered within one interval
    recorder.decrement_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == ""  # still 1
    recorder.decrement_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == "0"
    recorder.touch("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == ""


def test_a_lost_lease_makes_the_shard_send_every_count_again() -> None:
    from fedtrack_redis.pending import ShardQueues

    recorder = Recorder()
    keys = NamespaceKeys("ns")
    queues = ShardQueues(recorder, keys, "w1", lease_ttl=30)
    for domain in ("a.example", "b.example", "c.example"):
        recorder.increment_queue(domain)
    sealed_lines(queues, recorder)
    recorder.touch("a.example")
    batch = recorder.swap()
    assert batch is not None
    queues.absorb(batch)
    shard = keys.shard_for("a.example").shard
    (chunk,) = [c for c in queues.heads() if c.shard == shard]
    queues.acknowledged(chunk, applied=True, lease_absent=True)
    resent = {
        line.split("|")[0]: line.split("|")[1]
        for c in queues.heads()
        for line in c.args[4].split("\n")
        if line
    }
    same_shard = {
        d for d in ("a.example", "b.example", "c.example") if keys.shard_for(d).shard == shard
    }
    assert resent == dict.fromkeys(same_shard, "1")
