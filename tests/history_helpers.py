"""An injected clock for the history tests: bucket boundaries without waiting for them.

push.lua stamps buckets with the Redis server's TIME, which a test cannot set. The
`clock` fixture registers, for this test only, a push.lua whose TIME is overridden by a
key the test sets (production never runs that text), and points `history.server_time`
(the readers' and the leader's clock) at the same key, so pushes, reads and closing all
agree on one time the test moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from fedtrack_redis import history, scripts
from fedtrack_redis.stats import COUNTER_FIELDS

#: A 5-minute (and so 1-minute) boundary in 2026, far from the real clock on purpose.
EPOCH = 1_780_000_200
_TIME = "local time = call('TIME')\n"


@dataclass
class Clock:
    """The injected time, in whole seconds."""

    client: redis.Redis
    key: str
    now: int = EPOCH

    def set(self, now: int) -> None:
        self.now = now
        self.client.set(self.key, str(now))

    def advance(self, seconds: int) -> None:
        self.set(self.now + seconds)


@pytest.fixture
def clock(
    monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis, namespace: str
) -> Iterator[Clock]:
    key = f"fedtrack-test-clock:{namespace}"
    source = scripts.lua_source("push")
    assert source.count(_TIME) == 1
    patched = source.replace(
        _TIME,
        _TIME + f"local forced = call('GET', '{key}')\nif forced then time = {{forced, '0'}} end\n",
    )
    real = scripts.lua_source

    def lua_source(name: str) -> str:
        return patched if name == "push" else real(name)

    monkeypatch.setattr(scripts, "lua_source", lua_source)

    def server_time(client: Any) -> float:
        return float(redis_client.get(key) or EPOCH)

    monkeypatch.setattr(history, "server_time", server_time)
    fixed = Clock(redis_client, key)
    fixed.set(EPOCH)
    yield fixed
    redis_client.delete(key)


def sums(buckets: list[history.HistoryBucket]) -> dict[str, int]:
    """The nine counters summed over `buckets`, zeros left out."""
    total: dict[str, int] = {}
    for bucket in buckets:
        for name in COUNTER_FIELDS:
            value = getattr(bucket, name)
            if value:
                total[name] = total.get(name, 0) + value
    return total


def counted(fields: dict[str, int]) -> dict[str, int]:
    """The nine event counters of a domain's expected hash fields (histogram aside)."""
    return {name: value for name, value in fields.items() if name in COUNTER_FIELDS and value}


def merge(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for name, value in more.items():
        into[name] = into.get(name, 0) + value
    return into


def bases_left(engine: Any, keys: Any, domains: Any) -> int:
    """How many of `domains` still hold a history base in their hash (`history.BASE_FIELD`)."""
    return sum(
        1
        for domain in domains
        if engine.node_for(keys.shard_for(domain).base).hexists(
            keys.shard_for(domain).domain(domain), history.BASE_FIELD
        )
    )
