"""push.lua's health state machine and the two health scripts, call by call: on fakeredis
(lupa's Lua, quick) and on the real Redis (Lua 5.1), with chosen seeds and times."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from fedtrack_redis import scripts
from fedtrack_redis.chunk import seal
from fedtrack_redis.health.policy import HealthPolicy, decode_record
from fedtrack_redis.keys import NamespaceKeys, ShardKeys

POLICY = HealthPolicy(
    failures=3, backoff_min=10.0, backoff_max=80.0, unavailable_after=2, period=3600.0
)


@pytest.fixture
def shard(namespace: str, script_client: redis.Redis) -> ShardKeys:
    keys = NamespaceKeys(namespace).shards[0]
    script_client.set(keys.hydrated, "1")
    return keys


class Pusher:
    def __init__(self, client: redis.Redis, shard: ShardKeys) -> None:
        self.client = client
        self.shard = shard
        self.script = scripts.register(client, "push")
        self.seq = 0

    def push(self, rows: list[tuple[str, int, int]], seed: int | None = None) -> list[Any]:
        """rows: (domain, tail failures, healed)."""
        self.seq += 1
        pending = [
            (name, [tail, 0, 0, healed, 0, 0, 0, 0, -1, None, -1, 0, -1, 0, 2 * tail + healed])
            for name, tail, healed in rows
        ]
        spec = POLICY.script_spec("PUBLISH", self.shard.health_feed)
        chunk = seal(self.shard, self.seq, "w", 30_000, 600, pending, health=spec)
        args = [*chunk.args, "", 100_000, chunk.health]
        if seed is not None:
            args[-1] = f"{seed};{chunk.health.partition(';')[2]}"
        return list(self.script(keys=list(chunk.keys), args=args))

    def record(self, domain: str) -> str | None:
        value = self.client.hget(self.shard.health, domain)
        return None if value is None else str(value)


def test_the_state_machine_call_by_call(script_client: redis.Redis, shard: ShardKeys) -> None:
    pusher = Pusher(script_client, shard)
    reply = pusher.push([("a.example", 2, 0)])
    assert reply[0] == 1 and reply[5] == ""  # failing, not held: nothing published
    health = decode_record("a.example", pusher.record("a.example"))
    assert health.state == "healthy" and health.consecutive_failures == 2
    reply = pusher.push([("a.example", 1, 0)])
    rev, line = str(reply[5]).split("\n")
    assert rev == "1" and line.startswith("a.example|backoff|")
    held = script_client.zscore(shard.held, "a.example")
    assert held is not None and int(line.rsplit("|", 1)[1]) == held
    assert script_client.hget(shard.health_meta, "n:backoff") == "1"
    events = script_client.xrange(shard.health_events)
    assert [(e[1]["from"], e[1]["to"]) for e in events] == [("healthy", "backoff")]
    assert "\tfh\t3" in events[0][1]["stats"]  # the hash as it was (failed_http = 3)
    reply = pusher.push([("a.example", 0, 1)])  # an outbound success
    assert str(reply[5]).endswith("a.example|healthy|0")
    assert pusher.record("a.example") is None and script_client.zcard(shard.held) == 0
    assert script_client.hget(shard.health_meta, "n:backoff") == "0"
    assert len(script_client.xrange(shard.health_events)) == 2


def test_the_same_seed_gives_the_same_schedule(
    script_client: redis.Redis, shard: ShardKeys
) -> None:
    pusher = Pusher(script_client, shard)
    intervals: dict[int, set[int]] = {}
    for seed in (1, 12345, 2**31 - 1):
        for attempt in range(2):
            name = f"s{seed}-{attempt}.example"
            pusher.push([(name, 3, 0)], seed=seed)
            health = decode_record(name, pusher.record(name))
            assert health.next_attempt_at and health.failing_since
            interval = round((health.next_attempt_at - health.failing_since) * 1000)
            intervals.setdefault(seed, set()).add(interval)
    for seed, values in intervals.items():
        assert len(values) == 1, (seed, values)  # a retry of the chunk lands on the same time
        assert all(8_000 <= value < 14_000 for value in values)


def test_growth_cap_and_unavailable_without_jitter(
    script_client: redis.Redis, shard: ShardKeys
) -> None:
    pusher = Pusher(script_client, shard)
    for extra, base in ((0, 10_000), (1, 20_000), (2, 40_000), (3, 80_000), (10, 80_000)):
        name = f"g{extra}.example"
        pusher.push([(name, 3 + extra, 0)])
        health = decode_record(name, pusher.record(name))
        assert health.next_attempt_at and health.failing_since
        interval = (health.next_attempt_at - health.failing_since) * 1000
        assert 0.8 * base <= interval < 1.4 * base + 1, (extra, interval)
    # two distinct periods: the record says the failures began in an earlier hour
    pusher.push([("u.example", 3, 0)])
    record = pusher.record("u.example")
    assert record is not None
    state, count, since, upcoming, _periods, last, step = record.split(",")
    earlier = int(last) - 1
    script_client.hset(
        shard.health, "u.example", f"{state},{count},{since},{upcoming},1,{earlier},{step}"
    )
    reply = pusher.push([("u.example", 1, 0)])
    assert "u.example|unavailable|" in str(reply[5])
    health = decode_record("u.example", pusher.record("u.example"))
    assert health.state == "unavailable" and health.failure_periods == 2
    time_ms = int(str(reply[5]).rsplit("|", 1)[1]) - 80_000
    assert int(script_client.zscore(shard.held, "u.example") or 0) == time_ms + 80_000


def test_claim_and_reset_scripts(script_client: redis.Redis, shard: ShardKeys) -> None:
    pusher = Pusher(script_client, shard)
    pusher.push([("c.example", 3, 0)])
    claim = scripts.register(script_client, "health_claim")
    spec = f"7;{POLICY.script_spec('PUBLISH', shard.health_feed)}"
    keys = [shard.health, shard.held, shard.health_meta]
    status, _upcoming, _feed = claim(keys=keys, args=["c.example", spec])
    assert status == 0  # not due yet
    script_client.zadd(shard.held, {"c.example": 1})  # due long ago
    status, _upcoming, feed = claim(keys=keys, args=["c.example", spec])
    assert status == 1 and str(feed).split("\n")[1].startswith("c.example|backoff|")
    assert claim(keys=keys, args=["c.example", spec])[0] == 0  # the next one is not due
    assert claim(keys=keys, args=["nobody.example", spec])[0] == -1
    reset = scripts.register(script_client, "health_reset")
    reset_keys = [*keys, shard.health_events, shard.domain("c.example")]
    args = ["c.example", "PUBLISH", shard.health_feed, 1000]
    previous, feed = reset(keys=reset_keys, args=args)
    assert previous == "backoff" and str(feed).endswith("c.example|healthy|0")
    assert script_client.zcard(shard.held) == 0 and pusher.record("c.example") is None
    assert reset(keys=reset_keys, args=args) == ["", ""]
    assert script_client.xrange(shard.health_events)[-1][1]["to"] == "healthy"


def test_lines_without_the_health_field_do_nothing_for_health(
    script_client: redis.Redis, shard: ShardKeys
) -> None:
    pusher = Pusher(script_client, shard)
    script = pusher.script
    chunk = seal(shard, 99, "w", 30_000, 600, [("n.example", [3, 0, 0, 0, 0, 0, 0, 0, -1, None])])
    reply = script(keys=list(chunk.keys), args=[*chunk.args, "", 100_000])  # no ARGV[8]
    assert reply[0] == 1 and pusher.record("n.example") is None
    bad = [*chunk.args[:1], "100", *chunk.args[2:], "", 100_000, "1;nonsense"]
    assert script(keys=list(chunk.keys), args=bad)[0] == -1
