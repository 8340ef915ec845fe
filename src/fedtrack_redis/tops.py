"""The shards' top lists — most failures, slowest mean latency, largest backlog — that
pages and anomalies are read from (`reads.page`, `anomalies.indexed_anomalies`).

The flusher refreshes them from every flush epoch it reads: it has each changed domain's
whole hash in hand then, so keeping them costs pushes nothing (in push.lua they cost a
fifth of its time). They are therefore at most one flush interval behind; the values a
page shows are always read live from the hashes. Hydration fills them with what it
restores, and a lease release updates the backlog at once. Each list keeps the
`TOP_SIZE` highest scores of its shard, so their memory is bounded whatever the size.

A refresh sends only what can change a list: the changed scores of its members, and of the
`TOP_SIZE` best newcomers that beat its lowest score (or all while it is not full) —
anything below those would be trimmed at once. So one write carries at most twice
`TOP_SIZE` members whatever the epoch's size (a first flush of a million domains would
otherwise send a whole shard in one ZADD), and at a million domains almost nothing of an
epoch is sent.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .chunk import TOP_SIZE
from .engine import RedisEngine
from .keys import ShardKeys
from .store.stats import LINE_COLUMNS

#: Positions in a stats line (`store.stats.LINE_COLUMNS`) of what the lists score.
QUEUED = LINE_COLUMNS.index("queued_messages")
FAILED = slice(LINE_COLUMNS.index("failed_http"), LINE_COLUMNS.index("failed_smtp") + 1)
SUCCESSES = LINE_COLUMNS.index("successful_deliveries")
LATENCY = LINE_COLUMNS.index("total_latency_ms")


def failing_scores(rows: Sequence[Sequence[str]]) -> list[int]:
    """The failures list's score of each split stats line: its failed attempts."""
    return [sum(map(int, row[FAILED])) for row in rows]


def slow_scores(rows: Sequence[Sequence[str]]) -> list[float]:
    """The latency list's score of each split stats line: its mean latency (0 without a
    success)."""
    return [
        int(row[LATENCY]) / int(row[SUCCESSES]) if row[SUCCESSES] != "0" else 0.0 for row in rows
    ]


@dataclass
class _List:
    """What the flusher knows of one top list while it refreshes it."""

    key: str
    #: The list's members with their scores when the refresh began.
    members: dict[str, float] = field(default_factory=dict)
    lowest: float = 0.0
    full: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)

    def offer(self, domains: list[str], scores: Sequence[float]) -> None:
        """Keep each domain's score if it may belong in the list; note members at 0."""
        members, kept, gone = self.members, self.scores, self.gone
        everyone, lowest = not self.full, self.lowest
        for domain, score in zip(domains, scores, strict=True):
            if score > 0:
                if everyone or score > lowest or domain in members:
                    kept[domain] = score
            elif domain in members:
                gone.append(domain)

    def to_write(self, size: int) -> dict[str, float]:
        """The members' changed scores and the `size` best newcomers: the rest could not
        stay, and an unchanged score need not be sent."""
        members, scores = self.members, self.scores
        newcomers = [domain for domain in scores if domain not in members]
        if len(newcomers) > size:
            newcomers = heapq.nlargest(size, newcomers, key=scores.__getitem__)
        changed = {
            domain: score
            for domain, score in scores.items()
            if domain in members and members[domain] != score
        }
        changed.update((domain, scores[domain]) for domain in newcomers)
        return changed


class TopRefresh:
    """One shard's refresh during a flush: `load`, `add` each page, then `finish`."""

    def __init__(self, engine: RedisEngine, shard: ShardKeys, size: int = TOP_SIZE) -> None:
        self._engine = engine
        self.shard = shard
        self._size = size
        self._lists = [
            _List(shard.top_failures),
            _List(shard.top_latency),
            _List(shard.top_queued),
        ]

    def load(self) -> TopRefresh:
        """Read each list's members and scores (at most `size` each), lowest first."""
        with self._engine.node_for(self.shard.base).pipeline(transaction=False) as pipe:
            for item in self._lists:
                # the reply as sent (no pair of Python objects per member): a tenth of the time
                pipe.execute_command("ZRANGE", item.key, 0, -1, "WITHSCORES")  # type: ignore[no-untyped-call]
            replies = pipe.execute()
        for item, reply in zip(self._lists, replies, strict=True):
            item.members = dict(score_pairs(reply))
            item.lowest = next(iter(item.members.values()), 0.0)
            item.full = len(item.members) >= self._size
        return self

    def add(self, lines: list[str]) -> None:
        """Offer the domains of one page of stats lines to the lists."""
        rows = [line.split("\t", LATENCY + 1) for line in lines]
        domains = [row[0] for row in rows]
        queued = [int(row[QUEUED]) for row in rows]
        columns: tuple[Sequence[float], ...] = (failing_scores(rows), slow_scores(rows), queued)
        for item, scores in zip(self._lists, columns, strict=True):
            item.offer(domains, scores)

    def finish(self) -> None:
        """Write what changed and trim each list to its `size` highest scores."""
        with self._engine.node_for(self.shard.base).pipeline(transaction=False) as pipe:
            for item in self._lists:
                scores = item.to_write(self._size)
                if scores:
                    pipe.zadd(item.key, scores)
                if item.gone:
                    pipe.zrem(item.key, *item.gone)
                pipe.zremrangebyrank(item.key, 0, -self._size - 1)
            pipe.execute()


def score_pairs(reply: list[Any]) -> list[tuple[str, float]]:
    """A ``ZRANGE … WITHSCORES`` reply as sent (flat in RESP2, in pairs in RESP3) as
    (member, score) pairs: a tenth of the time of redis-py's reply callback."""
    if reply and isinstance(reply[0], list):
        return [(str(member), float(score)) for member, score in reply]
    flat = iter(reply)
    return list(zip(map(str, flat), map(float, flat), strict=True))
