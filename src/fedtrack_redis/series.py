"""The flusher leader's part of the history (docs/history.md): add finished cluster buckets
into the namespace hashes, and close finished domain buckets under the caps.

Cluster buckets: push.lua adds each chunk's sums to its shard's bucket; once a bucket
ended on every node (`GRACE` seconds of clock difference allowed) the leader adds the 16
shards' values into ``{<ns>:history}:m1`` / ``m5`` and moves ``upto``. Writing a sum and
``upto`` is an overwrite, so a retry or a new leader writes the same values (G13); reads
take a bucket from the namespace hash only up to ``upto``, from the shards after it.

Domain buckets: once per 5-minute bucket per shard (``series:swept``), two passes over
the shard's bases (the history base field of the hashes of the domains touched since its
last closed bucket, found by a ``ZSCAN`` of its ``active`` index) and ``series:closed``
(an ``HSCAN``): cursors over two keys, never the keyspace. The first ranks each
finished bucket's domains by failures + deliveries across all shards, the second runs
``series_close.lua`` on pages of entries, which keeps the `TOP_DOMAINS` most active,
the watched and the held (not healthy) ones (appended to the domain's string of that
day, which expires 7 days after the day) and drops the rest, removing each entry in the
same call. The work is O(domains of the shard) for the walk of ``active``
(`SCAN_COUNT` members a call) and O(domains active in the bucket) for the rest, once
per bucket, in calls of `PAGE` entries; a read never pays it.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from . import history
from .engine import RedisEngine
from .history import (
    BASE_FIELD,
    COUNTERS,
    FIVE,
    FIVES_KEPT,
    MINUTE,
    MINUTES_KEPT,
    SHARD_FIVES_KEPT,
    SHARD_MINUTES_KEPT,
    parse_counts,
)
from .keys import NamespaceKeys, ShardKeys
from .scripts import Scripts
from .stats import COUNTER_HASH_FIELDS

log = logging.getLogger("fedtrack_redis.history")

#: Domains kept per finished 5-minute bucket by activity (failures + deliveries).
TOP_DOMAINS = 1_000
#: Seconds a bucket stays open past its end before the leader adds it up: the largest
#: clock difference between the nodes of a Cluster this tolerates.
GRACE = 5.0
#: Entries per ``series_close.lua`` call (each reads and writes a few fields).
PAGE = 64
#: A day of a domain's kept buckets lives this long after the day ends.
DAY_KEPT = 7 * 86_400
DAY = 86_400
#: Members of `active` per ``ZSCAN`` call when looking for the finished bases.
SCAN_COUNT = 500
# counters that make a bucket's activity: the three failures and the deliveries
_ACTIVITY = (0, 1, 2, 6)


@dataclass(frozen=True)
class _Due:
    """A shard to close: its open bucket, its clock, and the lowest `active` score whose
    domain can hold a finished base not closed yet."""

    shard: ShardKeys
    open_bucket: int
    now: float
    low: float


class SeriesCloser:
    """Closes the finished buckets of one namespace (the leader calls `close` each tick)."""

    def __init__(
        self, engine: RedisEngine, scripts: Scripts, keys: NamespaceKeys, top: int = TOP_DOMAINS
    ) -> None:
        self._engine = engine
        self._scripts = scripts
        self._keys = keys
        self._top = top

    def close(self) -> int:
        """Add finished cluster buckets, close finished domain buckets; entries closed."""
        self.compact(MINUTE)
        self.compact(FIVE)
        return self.sweep()

    # -- cluster buckets ----------------------------------------------------------------------

    def compact(self, width: int) -> int:
        """Add the shards' finished buckets of `width` into the namespace hash; how many."""
        keys = self._keys
        if width == MINUTE:
            compact, kept, shard_kept = keys.history_minutes, MINUTES_KEPT, SHARD_MINUTES_KEPT
        else:
            compact, kept, shard_kept = keys.history_fives, FIVES_KEPT, SHARD_FIVES_KEPT
        client = self._engine.node_for(compact)
        target = int((history.server_time(client) - GRACE) // width) - 1  # newest finished bucket
        upto_raw = client.hget(compact, "upto")
        upto = int(upto_raw) if upto_raw else target - shard_kept
        buckets = list(range(max(upto + 1, target - shard_kept + 1), target + 1))
        if not buckets:
            return 0
        sums = history.shard_sums(self._engine, keys, buckets, width)
        written = {
            str(bucket): ",".join(str(value) for value in row)
            for bucket, row in zip(buckets, sums, strict=True)
            if any(row)
        }
        gone = [str(bucket) for bucket in range(max(upto, buckets[0]) - kept, target - kept + 1)]
        with client.pipeline(transaction=False) as pipe:
            if written:
                pipe.hset(compact, mapping=written)  # type: ignore[arg-type]
            pipe.hset(compact, "upto", str(target))
            if gone:
                pipe.hdel(compact, *gone)
            pipe.execute()
        return len(buckets)

    # -- domain buckets -----------------------------------------------------------------------

    def sweep(self) -> int:
        """Close the finished 5-minute buckets of every shard not closed since its last
        bucket ended; the entries closed."""
        keys = self._keys
        due: list[_Due] = []
        clocks: dict[int, float] = {}
        swept_values = self._engine.per_shard(
            keys.shards, lambda pipe, shard: pipe.get(shard.series_swept)
        )
        for shard, (swept,) in zip(keys.shards, swept_values, strict=True):
            client = self._engine.node_for(shard.base)
            if id(client) not in clocks:
                clocks[id(client)] = history.server_time(client)
            now = clocks[id(client)]
            open_bucket = int(now // FIVE)
            if swept is None or int(swept) < open_bucket - 1:
                # a base is of its domain's last touch's bucket (push.lua bases on a touch
                # and scores `active` with the same stamp): the finished bases not closed
                # yet are of domains last touched after the shard's last closed bucket
                low = 0 if swept is None else (int(swept) + 1) * FIVE
                due.append(_Due(shard, open_bucket, now, low))
        if not due:
            return 0
        ranked: dict[int, list[tuple[int, str]]] = defaultdict(list)
        window = {entry.shard.shard: entry for entry in due}
        sizes = self._engine.per_shard(
            [entry.shard for entry in due],
            lambda pipe, shard: (
                pipe.zcount(
                    shard.active,
                    window[shard.shard].low,
                    f"({window[shard.shard].open_bucket * FIVE}",
                ),
                pipe.hlen(shard.series_closed),
            ),
        )
        # at most this many entries (a domain in the window may hold no base)
        everyone = sum(based + waiting for based, waiting in sizes) <= self._top
        for entry in [] if everyone else due:  # else no need to rank
            for bucket, domain, activity in self._entries(entry, live=True):
                heap = ranked[bucket]
                if len(heap) < self._top:
                    heapq.heappush(heap, (activity, domain))
                elif (activity, domain) > heap[0]:
                    heapq.heapreplace(heap, (activity, domain))
        top = {bucket: {domain for _a, domain in heap} for bucket, heap in ranked.items()}
        watching = {
            str(member) for member in self._engine.node_for(keys.watched).smembers(keys.watched)
        }
        closed = 0
        for entry in due:
            entries = [
                f"{bucket}|{domain}|"
                f"{int(everyone or domain in watching or domain in top.get(bucket, ()))}"
                f"|{max(1, int((bucket * FIVE // DAY + 1) * DAY + DAY_KEPT - entry.now))}"
                for bucket, domain, _activity in self._entries(entry, live=False)
            ]
            for start in range(0, len(entries), PAGE):
                closed += self._close_page(
                    entry.shard, entry.open_bucket, entries[start : start + PAGE]
                )
            self._engine.node_for(entry.shard.base).set(
                entry.shard.series_swept, str(entry.open_bucket - 1)
            )
        if closed:
            log.info("history: closed %d domain bucket(s) in %d shard(s)", closed, len(due))
        return closed

    def _entries(self, due: _Due, *, live: bool) -> Iterator[tuple[int, str, int]]:
        """(bucket, domain, activity) of the shard's finished entries: the bases first (the
        `BASE_FIELD` of the hashes of the domains `active` scores after ``due.low``, found
        with ``ZSCAN``, which meets every member present for the whole walk however its
        score moves), then ``closed`` (an entry moved from one to the other meanwhile, by
        a touch that based the domain again, is met in ``closed``). The activity is
        computed only with `live` (it needs the live counters)."""
        shard, open_bucket = due.shard, due.open_bucket
        client = self._engine.node_for(shard.base)
        fields = (
            [BASE_FIELD, *(COUNTER_HASH_FIELDS[f] for f in _ACTIVITY)] if live else [BASE_FIELD]
        )
        high = open_bucket * FIVE
        cursor: Any = 0
        while True:
            cursor, scored = client.zscan(shard.active, cursor, count=SCAN_COUNT)
            names = [
                str(member)
                for member, score in cast(list[tuple[str, float]], scored)
                if due.low <= score < high
            ]
            if names:
                with client.pipeline(transaction=False) as pipe:
                    for domain in names:
                        pipe.hmget(shard.domain(domain), fields)
                    replies = pipe.execute()
                for domain, (based, *now) in zip(names, replies, strict=True):
                    if based is None:
                        continue
                    number, _sep, text = str(based).partition("|")
                    if int(number) >= open_bucket:
                        continue
                    activity = 0
                    if live:
                        base = parse_counts(text)
                        activity = sum(int(v or 0) for v in now) - sum(base[f] for f in _ACTIVITY)
                    yield int(number), domain, max(0, activity)
            if int(cursor) == 0:
                break
        cursor = 0
        while True:
            cursor, page = client.hscan(shard.series_closed, cursor, count=PAGE)
            for field, value in cast(dict[str, str], page).items():
                number, _sep, name = str(field).partition("|")
                if int(number) < open_bucket:
                    counts = parse_counts(str(value)) if live else [0] * len(COUNTERS)
                    yield int(number), name, sum(counts[f] for f in _ACTIVITY)
            if int(cursor) == 0:
                break

    def _close_page(self, shard: ShardKeys, open_bucket: int, entries: list[str]) -> int:
        keys = [shard.series_closed, shard.held]
        for entry in entries:
            bucket, domain, _rest = entry.split("|", 2)
            keys += [shard.domain(domain), shard.domain_day(domain, int(bucket) * FIVE // DAY)]
        closed, _kept = self._scripts.run("series_close", keys, [open_bucket, *entries])
        return int(closed)
