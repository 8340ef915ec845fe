"""The shards' top lists — most failures, slowest mean latency, largest backlog — that
pages and anomalies are read from (`reads.page`, `anomalies.indexed_anomalies`).

The flusher refreshes them from every flush epoch it reads: it has each changed domain's
whole hash in hand then, so keeping them costs pushes nothing (in push.lua they cost a
fifth of its time). They are therefore at most one flush interval behind; the values a
page shows are always read live from the hashes. Hydration fills them with what it
restores, and a lease release updates the backlog at once. Each list keeps the
`TOP_SIZE` highest scores of its shard, so their memory is bounded whatever the size.

A refresh sends only what can change a list: the scores of its members, and of the
`TOP_SIZE` best newcomers that beat its lowest score (or all while it is not full) —
anything below those would be trimmed at once. So one write carries at most twice
`TOP_SIZE` members whatever the epoch's size (a first flush of a million domains would
otherwise send a whole shard in one ZADD), and at a million domains almost nothing of an
epoch is sent.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .chunk import TOP_SIZE
from .engine import RedisEngine
from .keys import ShardKeys

# positions in a stats line (store.stats.LINE_COLUMNS)
_QUEUED, _FAILED, _SUCCESSES, _LATENCY = 1, slice(2, 5), 8, 10


@dataclass
class _List:
    """What the flusher knows of one top list while it refreshes it."""

    key: str
    members: set[str] = field(default_factory=set)
    lowest: float = 0.0
    full: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)

    def offer(self, domain: str, score: float) -> None:
        if score > 0 and (domain in self.members or not self.full or score > self.lowest):
            self.scores[domain] = score
        elif score <= 0 and domain in self.members:
            self.gone.append(domain)

    def to_write(self, size: int) -> dict[str, float]:
        """The members' new scores and the `size` best newcomers: the rest could not stay."""
        newcomers = [domain for domain in self.scores if domain not in self.members]
        if len(newcomers) <= size:
            return self.scores
        kept = {domain: self.scores[domain] for domain in self.scores if domain in self.members}
        for domain in heapq.nlargest(size, newcomers, key=self.scores.__getitem__):
            kept[domain] = self.scores[domain]
        return kept


class TopRefresh:
    """One shard's refresh during a flush: `load`, `add` each page, then `finish`."""

    def __init__(self, engine: RedisEngine, shard: ShardKeys, size: int = TOP_SIZE) -> None:
        self._engine = engine
        self._shard = shard
        self._size = size
        self._lists = [
            _List(shard.top_failures),
            _List(shard.top_latency),
            _List(shard.top_queued),
        ]

    def load(self) -> TopRefresh:
        """Read each list's members and lowest score (at most `size` each)."""
        with self._engine.node_for(self._shard.base).pipeline(transaction=False) as pipe:
            for item in self._lists:
                pipe.zrange(item.key, 0, -1, withscores=True)
            replies = pipe.execute()
        for item, members in zip(self._lists, replies, strict=True):
            item.members = {str(domain) for domain, _score in members}
            item.lowest = float(members[0][1]) if members else 0.0
            item.full = len(members) >= self._size
        return self

    def add(self, lines: list[str]) -> None:
        """Offer the domains of one page of stats lines to the lists."""
        failing, slow, queued = self._lists
        for line in lines:
            parts = line.split("\t")
            domain = parts[0]
            failing.offer(domain, sum(int(value) for value in parts[_FAILED]))
            successes = int(parts[_SUCCESSES])
            slow.offer(domain, int(parts[_LATENCY]) / successes if successes else 0.0)
            queued.offer(domain, int(parts[_QUEUED]))

    def finish(self) -> None:
        """Write what changed and trim each list to its `size` highest scores."""
        with self._engine.node_for(self._shard.base).pipeline(transaction=False) as pipe:
            for item in self._lists:
                scores = item.to_write(self._size)
                if scores:
                    pipe.zadd(item.key, scores)
                if item.gone:
                    pipe.zrem(item.key, *item.gone)
                pipe.zremrangebyrank(item.key, 0, -self._size - 1)
            pipe.execute()
