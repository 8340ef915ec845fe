"""The flusher leader's part of the history (docs/history.md): add finished cluster buckets
into the namespace hashes, and close finished domain buckets under the caps.

Cluster buckets: push.lua adds each chunk's sums to its shard's bucket; once a bucket
ended on every node (`GRACE` seconds of clock difference allowed) the leader adds the 16
shards' values into ``{<ns>:history}:m1`` / ``m5`` and moves ``upto``. Writing a sum and
``upto`` is an overwrite, so a retry or a new leader writes the same values (G13); reads
take a bucket from the namespace hash only up to ``upto``, from the shards after it.

Domain buckets: once per 5-minute bucket per shard (``series:swept``), two passes over
the shard's ``series:base`` and ``series:closed`` (``HSCAN`` cursors over two keys, never
the keyspace): the first ranks each finished bucket's domains by failures + deliveries
across all shards, the second runs ``series_close.lua`` on pages of entries, which keeps
the `TOP_DOMAINS` most active, the watched and the held (not healthy) ones (appended
to the domain's string of that day, which expires 7 days after the day) and drops the
rest, removing each entry in the same call. The work
is O(domains active in the bucket) once per bucket, in calls of `PAGE` entries; a read
never pays it.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, cast

from . import history
from .engine import RedisEngine
from .history import (
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
# counters that make a bucket's activity: the three failures and the deliveries
_ACTIVITY = (0, 1, 2, 6)


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
        due: list[tuple[ShardKeys, int, float]] = []
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
                due.append((shard, open_bucket, now))
        if not due:
            return 0
        ranked: dict[int, list[tuple[int, str]]] = defaultdict(list)
        sizes = self._engine.per_shard(
            [shard for shard, _open, _now in due],
            lambda pipe, shard: (pipe.hlen(shard.series_base), pipe.hlen(shard.series_closed)),
        )
        everyone = sum(base + waiting for base, waiting in sizes) <= self._top
        for shard, open_bucket, _now in [] if everyone else due:  # else no need to rank
            for bucket, domain, activity in self._entries(shard, open_bucket, live=True):
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
        for shard, open_bucket, now in due:
            entries = [
                f"{bucket}|{domain}|"
                f"{int(everyone or domain in watching or domain in top.get(bucket, ()))}"
                f"|{max(1, int((bucket * FIVE // DAY + 1) * DAY + DAY_KEPT - now))}"
                for bucket, domain, _activity in self._entries(shard, open_bucket, live=False)
            ]
            for start in range(0, len(entries), PAGE):
                closed += self._close_page(shard, open_bucket, entries[start : start + PAGE])
            self._engine.node_for(shard.base).set(shard.series_swept, str(open_bucket - 1))
        if closed:
            log.info("history: closed %d domain bucket(s) in %d shard(s)", closed, len(due))
        return closed

    def _entries(
        self, shard: ShardKeys, open_bucket: int, *, live: bool
    ) -> Iterator[tuple[int, str, int]]:
        """(bucket, domain, activity) of the shard's finished entries: ``base`` first, then
        ``closed`` (an entry moved from one to the other meanwhile is met in ``closed``).
        The activity is computed only with `live` (it needs the live counters)."""
        client = self._engine.node_for(shard.base)
        cursor: Any = 0
        while True:
            cursor, page = client.hscan(shard.series_base, cursor, count=PAGE)
            finished: list[tuple[int, str, str]] = []
            for domain, value in cast(dict[str, str], page).items():
                number, _sep, text = str(value).partition("|")
                if int(number) < open_bucket:
                    finished.append((int(number), str(domain), text))
            if finished and live:
                with client.pipeline(transaction=False) as pipe:
                    for _bucket, domain, _counts in finished:
                        pipe.hmget(shard.domain(domain), [COUNTERS[f] for f in _ACTIVITY])
                    lives = pipe.execute()
                for (bucket, domain, text), now in zip(finished, lives, strict=True):
                    base = parse_counts(text)
                    activity = sum(int(v or 0) for v in now) - sum(base[f] for f in _ACTIVITY)
                    yield bucket, domain, max(0, activity)
            else:
                for bucket, domain, _text in finished:
                    yield bucket, domain, 0
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
        keys = [shard.series_base, shard.series_closed, shard.held]
        for entry in entries:
            bucket, domain, _rest = entry.split("|", 2)
            keys += [shard.domain(domain), shard.domain_day(domain, int(bucket) * FIVE // DAY)]
        closed, _kept = self._scripts.run("series_close", keys, [open_bucket, *entries])
        return int(closed)
