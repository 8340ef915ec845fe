"""The shards' top lists — most failures, slowest mean latency, largest backlog — that
pages and anomalies are read from (`reads.page`, `anomalies.indexed_anomalies`).

The flusher refreshes them from every flush epoch it reads: it has each changed domain's
whole hash in hand then, so keeping them costs pushes nothing (in push.lua they cost a
fifth of its time). They are therefore at most one flush interval behind; the values a
page shows are always read live from the hashes. Hydration fills them with what it
restores, and a lease release updates the backlog at once. Each list keeps the
`TOP_SIZE` highest scores of its shard, so their memory is bounded whatever the size.
"""

from __future__ import annotations

from .chunk import TOP_SIZE
from .engine import RedisEngine
from .keys import ShardKeys

# positions in a stats line (store.stats.LINE_COLUMNS)
_QUEUED, _FAILED, _SUCCESSES, _LATENCY = 1, slice(2, 5), 8, 10


def refresh(engine: RedisEngine, shard: ShardKeys, lines: list[str]) -> None:
    """Score each domain of `lines` (stats lines of `shard`) in the shard's top lists."""
    failing: dict[str, float] = {}
    slow: dict[str, float] = {}
    queued: dict[str, float] = {}
    drained: list[str] = []
    for line in lines:
        parts = line.split("\t")
        domain = parts[0]
        failures = sum(int(value) for value in parts[_FAILED])
        if failures:
            failing[domain] = failures
        successes = int(parts[_SUCCESSES])
        if successes:
            slow[domain] = int(parts[_LATENCY]) / successes
        backlog = int(parts[_QUEUED])
        if backlog:
            queued[domain] = backlog
        else:
            drained.append(domain)
    with engine.node_for(shard.base).pipeline(transaction=False) as pipe:
        for key, scores in (
            (shard.top_failures, failing),
            (shard.top_latency, slow),
            (shard.top_queued, queued),
        ):
            if scores:
                pipe.zadd(key, scores)
        if drained:
            pipe.zrem(shard.top_queued, *drained)
        pipe.execute()


def trim(engine: RedisEngine, shard: ShardKeys, size: int = TOP_SIZE) -> None:
    """Keep the `size` highest scores of each of the shard's top lists."""
    with engine.node_for(shard.base).pipeline(transaction=False) as pipe:
        for key in (shard.top_failures, shard.top_latency, shard.top_queued):
            pipe.zremrangebyrank(key, 0, -size - 1)
        pipe.execute()
