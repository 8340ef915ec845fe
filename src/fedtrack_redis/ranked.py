"""One sorted index of every shard read as a single order, lazily: highest score first,
equal scores by name, as the API sorts.

Each shard keeps its index as a sorted set (``active``, or a top list of `tops`), read in
chunks of ``ZREVRANGEBYSCORE`` from under the last score read. Redis returns equal scores
in reverse name order: the runs of equal scores a chunk holds whole are turned round, and
the run a chunk ends in (it may go on past the chunk, for thousands of entries when a push
stamped them in the same second) is read on its own in name order, ``ZRANGEBYSCORE s s``,
only as far as it is needed. `heapq.merge` joins the shards' streams and reads each only
as far as the merged order needs: a page at offset N reads about N + limit entries in all,
not N + limit from each shard, and a name filter reads until it has its page. Every call
is bounded by the chunk size, whatever the number of domains; an index that changes
between chunks (domains becoming active again) never makes an entry come twice, nor skips
one that did not move.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from .engine import RedisEngine
from .keys import ShardKeys
from .tops import score_pairs

#: One ranked entry: domain, score, and the shard that holds it.
Entry = tuple[str, float, ShardKeys]
#: Entries read from one shard in its first chunk (read for every shard in one pipeline
#: per node) and, doubling, at most in any later one.
FIRST_CHUNK = 64
LARGEST_CHUNK = 4096


@dataclass
class Budget:
    """Entries a walk may read (`limit`, -1: no limit); `exhausted` once a shard needed
    more, or, for an index that holds only a shard's best (`complete=False`: a top list),
    once the walk went past a shard's last entry. The walk's order is only sure up to
    that moment: an entry that arrives with `exhausted` set is not."""

    limit: int
    read: int = 0
    exhausted: bool = False


def walk(
    engine: RedisEngine,
    shards: Sequence[ShardKeys],
    index: Callable[[ShardKeys], str],
    first: int = FIRST_CHUNK,
    largest: int = LARGEST_CHUNK,
    *,
    keep: Callable[[str], bool] | None = None,
    budget: Budget | None = None,
    complete: bool = True,
) -> Iterator[Entry]:
    """Every entry of the shards' `index` (a key of each shard) in the API's order, or
    only the domains `keep` accepts, read `first` per shard at once and then as the
    order reaches further into a shard, within `budget` when given. An index that is not
    `complete` exhausts the budget when the walk passes a shard's last entry."""
    replies = engine.per_shard(
        shards, lambda pipe, shard: pipe.execute_command(*_below(index(shard), "+inf", first))
    )
    budget = budget or Budget(limit=-1)
    streams = []
    for shard, (reply,) in zip(shards, replies, strict=True):
        reader = _Reader(engine, shard, index(shard), keep or _everything, budget)
        pairs = score_pairs(reply)
        budget.read += len(pairs)
        streams.append(_stream(reader, pairs, first, largest, complete))
    return heapq.merge(*streams, key=_order)


def _everything(_domain: str) -> bool:
    return True


def _order(entry: Entry) -> tuple[float, str]:
    return -entry[1], entry[0]


def _below(key: str, highest: str, count: int) -> tuple[object, ...]:
    """The `count` highest entries from `highest` down (``(`` excludes it)."""
    return ("ZREVRANGEBYSCORE", key, highest, "-inf", "WITHSCORES", "LIMIT", 0, count)


class _Reader:
    """One shard's index, read one call at a time within the walk's budget."""

    def __init__(
        self,
        engine: RedisEngine,
        shard: ShardKeys,
        key: str,
        keep: Callable[[str], bool],
        budget: Budget,
    ) -> None:
        self.engine, self.shard, self.key = engine, shard, key
        self.keep, self.budget = keep, budget

    def may_read(self) -> bool:
        """Whether the budget allows another call (once refused, the walk is done)."""
        budget = self.budget
        if budget.exhausted or 0 <= budget.limit <= budget.read:
            budget.exhausted = True
        return not budget.exhausted

    def below(self, score: float, count: int) -> list[tuple[str, float]]:
        """The `count` highest entries under `score`, highest first."""
        return self._ask(_below(self.key, f"({score!r}", count))

    def run(self, score: float, skip: int, count: int) -> list[tuple[str, float]]:
        """Entries of exactly `score` in name order, from the `skip`-th on."""
        value = repr(score)
        return self._ask(
            ("ZRANGEBYSCORE", self.key, value, value, "WITHSCORES", "LIMIT", skip, count)
        )

    def _ask(self, command: tuple[object, ...]) -> list[tuple[str, float]]:
        ((reply,),) = self.engine.per_shard([self.shard], functools.partial(_send, command))
        pairs = score_pairs(reply)
        self.budget.read += len(pairs)
        return pairs


def _send(command: tuple[object, ...], pipe: Any, _shard: ShardKeys) -> None:
    pipe.execute_command(*command)


def _stream(
    reader: _Reader, pairs: list[tuple[str, float]], size: int, largest: int, complete: bool
) -> Iterator[Entry]:
    """One shard's entries in the API's order, from its first chunk (`pairs`) on.

    Runs of equal scores a chunk holds whole are yielded reversed (Redis returns them in
    reverse name order). The run a full chunk ends in may go on past it, so it is read
    again on its own, in name order (`_run`); the next chunk starts under its score."""
    seen: set[str] = set()  # what was yielded: a member that moved is never yielded twice
    shard, keep = reader.shard, reader.keep
    while True:
        full = len(pairs) == size
        last = pairs[-1][1] if full else None
        for score, run in groupby(pairs, key=itemgetter(1)):
            if score == last:
                break
            for domain, _score in reversed(list(run)):
                if domain not in seen and keep(domain):
                    seen.add(domain)
                    yield domain, score, shard
        if last is None:
            reader.budget.exhausted |= not complete
            return
        if not reader.may_read():
            return
        yield from _run(reader, last, seen, size, largest)
        size = min(size * 2, largest)
        if not reader.may_read():
            return
        pairs = reader.below(last, size)


def _run(reader: _Reader, score: float, seen: set[str], size: int, largest: int) -> Iterator[Entry]:
    """The shard's entries of `score` in name order, read in chunks. Each chunk after the
    first starts one entry early: that one must be the last entry read. When it is not, a
    member of the run moved meanwhile (a domain became active again), and the run is read
    again from its start, leaving out what was yielded."""
    pairs = reader.run(score, 0, size)
    start, asked = 0, size  # the position of the chunk's first pair in the run, pairs asked
    shard, keep = reader.shard, reader.keep
    while True:
        full = len(pairs) == asked
        for domain, _score in pairs:
            if domain not in seen and keep(domain):
                seen.add(domain)
                yield domain, score, shard
        if not full or not reader.may_read():
            return
        last, start = pairs[-1], start + len(pairs)
        size = min(size * 2, largest)
        asked = size + 1
        pairs = reader.run(score, start - 1, asked)
        if pairs[:1] == [last]:
            pairs, asked = pairs[1:], size
        else:
            start, asked = 0, start + size
            pairs = reader.run(score, 0, asked)
