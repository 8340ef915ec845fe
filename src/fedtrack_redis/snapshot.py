"""Flush epochs: one shard's totals and acks from one instant, read in short calls.

The flusher closes a shard's epoch with ``flush_begin.lua`` (constant time: the domains
changed in it and the acks applied in it are renamed aside), then reads it in pages:

* domains still in ``flushing`` have not been written since the close, so their live hash
  is their value then (``flush_page.lua`` checks membership and reads in one call);
* domains written since were copied, as they were at the close, into ``snap`` by the first
  write (push.lua, lease_release.lua: copy on write);
* the acks of the epoch are ``flushacks``, as they were at the close.

Every call is bounded by the page size, whatever the shard holds, and the snapshot stays
exactly-once consistent: the totals and the acks persisted together describe the same
instant, so a chunk retried after Redis lost its data is counted once. After the database
committed, ``flush_end.lua`` frees the epoch (fenced: only the flusher that owns it). An
epoch whose flusher died stays closing and is resumed, the same snapshot, by the next
leader. Members are paged with ``SSCAN``/``HSCAN`` over these sets, which no one adds to
while the epoch closes: a cursor over one key, never a scan of the keyspace.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, cast

import redis

from .ahead import send_ahead
from .engine import RedisEngine
from .errors import BackendUnavailableError
from .keys import NamespaceKeys, ShardKeys
from .scripts import REDIRECTS, Scripts
from .store.stats import line_from_hash

#: Domains per ``flush_page.lua`` call (about a millisecond of Redis time each).
PAGE = 250
#: ``flush_page.lua`` calls sent together; one such batch is in flight while the
#: flusher writes the one before.
PAGES_PER_BATCH = 4
#: Members per ``SSCAN`` of the closing epoch's set (a fraction of a millisecond each).
MEMBERS_PER_SCAN = 5000

# flush_begin.lua
NOT_HYDRATED, OPENED, RESUMED, NOTHING = 0, 1, 2, 3


class EpochLostError(BackendUnavailableError):
    """The shard lost its marker or its epoch while being read (Redis lost its data): the
    flush writes nothing; hydration comes first."""


class EpochReader:
    """Closes, reads and ends the flush epochs of a namespace's shards."""

    def __init__(
        self, engine: RedisEngine, scripts: Scripts, keys: NamespaceKeys, page: int = PAGE
    ) -> None:
        self._engine = engine
        self._scripts = scripts
        self._keys = keys
        self._page = page

    def open(self, fence: int) -> list[ShardKeys]:
        """Close (or resume) every shard's epoch for `fence`; the shards with one to flush.

        With ``wait_replicas=N`` each close counts only once N replicas hold it (its
        RENAMEs make the WAIT cover everything the epoch holds): G10.
        """
        opened: list[ShardKeys] = []
        for shard in self._keys.shards:
            code = int(
                self._scripts.run_confirmed(
                    "flush_begin",
                    [
                        shard.hydrated,
                        shard.changed,
                        shard.flushing,
                        shard.epoch_acks,
                        shard.flush_acks,
                        shard.flush_state,
                    ],
                    [fence],
                )
            )
            if code in (OPENED, RESUMED):
                opened.append(shard)
        return opened

    def lines(self, shard: ShardKeys) -> Iterator[list[str]]:
        """One shard's epoch as pages of stats lines (`read` of that shard alone)."""
        for _shard, lines in self.read([shard]):
            yield lines

    def read(self, shards: list[ShardKeys]) -> Iterator[tuple[ShardKeys, list[str]]]:
        """The epochs of `shards` as (shard, page of stats lines), shard after shard, each
        domain once: the domains still in `flushing` (read live, membership checked in
        the same call), then those copied into `snap`.

        On each node the pages of all its shards form one stream (`ahead.send_ahead`):
        the next pages are read while the caller writes this one, and a shard's scan,
        its copied domains and the caller's work between shards overlap with Redis
        reading the next shard's first pages.
        """
        for client, group in self._engine.by_node(shards, lambda shard: shard.base):
            try:
                yield from self._read_node(client, group)
            except REDIRECTS:
                self._engine.refresh()  # the next flush asks the cluster where they are
                raise

    def _read_node(
        self, client: redis.Redis, group: list[ShardKeys]
    ) -> Iterator[tuple[ShardKeys, list[str]]]:
        sha = self._scripts.load(client, "flush_page")
        size = self._page
        sent: deque[ShardKeys] = deque()  # the shard of each batch sent, in order

        def command(shard: ShardKeys, page: list[str]) -> list[Any]:
            keys = [shard.hydrated, shard.flushing, shard.flush_state]
            keys += [shard.domain(domain) for domain in page]
            return ["EVALSHA", sha, len(keys), *keys, len(shard.domain(""))]

        def batches() -> Iterator[list[list[Any]]]:
            step = size * PAGES_PER_BATCH
            for shard in group:
                members = self._members(client, shard)
                for start in range(0, len(members), step):
                    end = min(start + step, len(members))
                    sent.append(shard)
                    yield [
                        command(shard, members[at : min(at + size, end)])
                        for at in range(start, end, size)
                    ]

        position, seen = 0, set[str]()  # group[position]: the shard being read
        for replies in send_ahead(client, batches()):
            shard = sent.popleft()
            while group[position] is not shard:  # the shards before it are read live
                yield from self._finish(client, group[position], seen)
                position, seen = position + 1, set()
            for reply in replies:
                if int(reply[0]) == 0:
                    raise EpochLostError(f"shard {shard.shard:02d} lost its data mid-flush")
                yield shard, self._page_lines(reply, seen, 1)
        for shard in group[position:]:
            yield from self._finish(client, shard, seen)
            seen = set()

    def _members(self, client: redis.Redis, shard: ShardKeys) -> list[str]:
        """The closing epoch's domains, each once (SSCAN may return one twice)."""
        members: dict[Any, None] = {}
        cursor: Any = 0
        while True:
            cursor, page = client.sscan(shard.flushing, cursor, count=MEMBERS_PER_SCAN)
            members.update(dict.fromkeys(page))
            if int(cursor) == 0:
                return [str(member) for member in members]

    def _finish(
        self, client: redis.Redis, shard: ShardKeys, seen: set[str]
    ) -> Iterator[tuple[ShardKeys, list[str]]]:
        """After its live pages: the shard's copied domains, then a check that its epoch
        is still there (a Redis that lost it mid-read fails the flush)."""
        for lines in self._copied_lines(client, shard, seen):
            yield shard, lines
        if not client.exists(shard.flush_state):
            raise EpochLostError(f"shard {shard.shard:02d} lost its epoch mid-flush")

    def _copied_lines(
        self, client: redis.Redis, shard: ShardKeys, seen: set[str]
    ) -> Iterator[list[str]]:
        """The domains written since the close, as the first write copied them."""
        cursor: Any = 0
        while True:
            cursor, copied = client.hscan(shard.snap, cursor, count=self._page)
            flat = [str(item) for pair in cast(dict[str, str], copied).items() for item in pair]
            if flat:
                yield self._page_lines(flat, seen)
            if int(cursor) == 0:
                return

    def acks(self, shard: ShardKeys, seen_at: int) -> list[tuple[int, str, int, int]]:
        """The epoch's acks: (shard, worker, seq, seen_at)."""
        client = self._engine.node_for(shard.base)
        found: dict[str, int] = {}
        cursor: Any = 0
        while True:
            cursor, page = client.hscan(shard.flush_acks, cursor, count=1000)
            for worker, seq in cast(dict[str, str], page).items():
                found[str(worker)] = max(int(seq), found.get(str(worker), 0))
            if int(cursor) == 0:
                break
        return [(shard.shard, worker, seq, seen_at) for worker, seq in sorted(found.items())]

    def end(self, shards: list[ShardKeys], fence: int) -> int:
        """Free the committed epochs of `shards` that `fence` still owns; how many."""
        ended = 0
        for shard in shards:
            ended += int(
                self._scripts.run(
                    "flush_end",
                    [shard.flush_state, shard.flushing, shard.snap, shard.flush_acks],
                    [fence],
                )
            )
        return ended

    @staticmethod
    def _page_lines(flat: list[str], seen: set[str], first: int = 0) -> list[str]:
        """Stats lines of the (domain, hash joined by tabs) pairs of ``flat[first:]``."""
        lines: list[str] = []
        for index in range(first, len(flat), 2):
            domain, fields = str(flat[index]), str(flat[index + 1])
            if domain in seen or not fields:
                continue  # read twice by a cursor, or it had no hash at the close
            seen.add(domain)
            lines.append(line_from_hash(domain, fields))
        return lines
