"""chunk: one push.lua call's wire format, the same deltas on every retry (unit)."""

from __future__ import annotations

from typing import Any

from fedtrack_redis.batch import NOT_QUEUED
from fedtrack_redis.chunk import ACK_CAP, pack_command, seal
from fedtrack_redis.keys import NamespaceKeys

SHARD = NamespaceKeys("ns").shards[3]


def row(failed_smtp: int = 0, queued: int = NOT_QUEUED, **buckets: int) -> list[Any]:
    histogram = {int(name[1:]): count for name, count in buckets.items()} or None
    return [0, 0, failed_smtp, 0, 2, 0, 1, 250.4, queued, histogram]


def test_the_packed_bytes_are_the_same_on_every_retry() -> None:
    chunk = seal(SHARD, 7, "w1", 30_000, 86_400, [("a.example", row(1, 2, h5=3))])
    first = chunk.packed("sha1", "")
    assert chunk.packed("sha1", "") is first  # not re-encoded
    decoded = first.decode()
    assert decoded.startswith("*") and "EVALSHA" in decoded and str(ACK_CAP) in decoded
    assert "a.example|2|0,0,1,0,2,0,3,1,250|5:3" in decoded  # latency rounded per push


def test_a_new_identity_or_script_repacks_the_same_deltas() -> None:
    chunk = seal(SHARD, 7, "w1", 30_000, 86_400, [("a.example", row(1))])
    plain = chunk.packed("sha1", "")
    known = chunk.packed("sha1", "f" * 32)
    assert known != plain and ("f" * 32).encode() in known
    assert plain.replace(b"$0\r\n\r\n", b"") in known.replace(b"$32\r\n" + b"f" * 32 + b"\r\n", b"")
    assert chunk.packed("sha2", "f" * 32) != known


def test_renumbered_changes_only_the_sequence_number() -> None:
    chunk = seal(SHARD, 7, "w1", 30_000, 86_400, [("a.example", row(1))])
    before = chunk.packed("sha", "")
    chunk.renumbered(99)
    after = chunk.packed("sha", "")
    assert chunk.seq == 99 and chunk.args[1] == "99"
    assert after.replace(b"$2\r\n99\r\n", b"$1\r\n7\r\n") == before


def test_in_flight_counts_are_carried_and_leased() -> None:
    chunk = seal(
        SHARD,
        1,
        "w1",
        30_000,
        86_400,
        [("a.example", row(queued=2)), ("b.example", row(queued=0)), ("c.example", row())],
    )
    assert chunk.queued == {"a.example": 2, "b.example": 0}
    assert chunk.leased == ("a.example",)
    assert chunk.domains == 3


def test_pack_command_is_resp() -> None:
    assert pack_command("GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


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
    assert chunk.keys[11:15] == (shard.health, shard.held, shard.health_meta, shard.health_events)
    assert chunk.keys[15:17] == (shard.series_minutes, shard.series_closed)
    assert chunk.keys[17:21] == (
        shard.lease_ages("worker-1"),
        shard.qshape,
        shard.qshape_top,
        shard.qshape_total,
    )
    assert chunk.keys[21:] == (shard.domain("a.example"), shard.domain("b.example"))
    assert chunk.args[:4] == ("worker-1", "42", "30000", "600")
    assert chunk.args[4].split("\n") == [
        "a.example||1,0,0,2,0,0,3,1,11|5:2",
        "b.example|3|0,0,0,0,0,0,0,0,0|",
    ]
    assert chunk.leased == ("b.example",)
    assert chunk.domains == 2


def test_seal_appends_changed_qshape_columns_and_lines_that_only_carry_ages() -> None:
    shard = NamespaceKeys("ns").shards[3]
    chunk = seal(
        shard,
        7,
        "w",
        30_000,
        600,
        [("a.example", [0, 0, 0, 0, 0, 0, 0, 0, 2, None])],
        ages={"a.example": {3: 2}, "c.example": {1: 0, 2: 1}},
    )
    assert chunk.args[4].split("\n") == [
        "a.example|2|0,0,0,0,0,0,0,0,0|||3:2",
        "c.example||0,0,0,0,0,0,0,0,0|||=1:0,2:1",
    ]
    assert chunk.keys[21:] == (shard.domain("a.example"), shard.domain("c.example"))
    assert chunk.domains == 2


def test_pack_command_sends_empty_arguments() -> None:
    assert pack_command("SET", "k", "") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"


def test_seal_appends_the_health_field_only_to_rows_with_outbound_outcomes() -> None:
    shard = NamespaceKeys("ns").shards[0]
    base = [0, 0, 0, 0, 0, 0, 0, 0, NOT_QUEUED, None, -1, 0, -1, 0]
    rows = [
        ("a.example", [*base, 4]),  # two temporary failures
        ("b.example", [*base, 3]),  # a success, then one failure
        ("c.example", [*base, 0]),  # nothing health cares about
    ]
    chunk = seal(shard, 1, "w", 30_000, 600, rows, health="3,1000,4000,7,86400000;PUBLISH;ch;1")
    assert chunk.args[4].split("\n") == [
        "a.example||0,0,0,0,0,0,0,0,0||2",
        "b.example||0,0,0,0,0,0,0,0,0||s1",
        "c.example||0,0,0,0,0,0,0,0,0|",
    ]
    seed, _, rest = chunk.health.partition(";")
    assert seed.isdigit() and int(seed) < 2**31 and rest.startswith("3,1000,")
    off = seal(shard, 2, "w", 30_000, 600, rows)
    assert "|2" not in off.args[4] and off.health == ""
