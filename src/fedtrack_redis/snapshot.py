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

import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

from .engine import RedisEngine
from .errors import BackendUnavailableError
from .keys import NamespaceKeys, ShardKeys
from .scripts import Scripts
from .store.stats import line_from_hash

#: Domains per ``flush_page.lua`` call (a millisecond or two of Redis time each).
PAGE = 250
#: Pages read ahead of the one being written.
PREFETCH = 2

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
        """The shard's epoch as pages of stats lines, each domain once.

        A helper thread reads the next pages from Redis while this one turns the last
        into lines, so Redis, the flusher and the database work at once.
        """
        pages: queue.Queue[list[str] | BaseException | None] = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()

        def read() -> None:
            try:
                for flat in self._raw_pages(shard):
                    while not stop.is_set():
                        try:
                            pages.put(flat, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                pages.put(None)
            except BaseException as exc:  # handed to the caller's thread
                pages.put(exc)

        reader = threading.Thread(target=read, name="fedtrack-flush-reader", daemon=True)
        reader.start()
        seen: set[str] = set()
        try:
            while (item := pages.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield self._page_lines(item, seen)
        finally:
            stop.set()
            reader.join()

    def _raw_pages(self, shard: ShardKeys) -> Iterator[list[str]]:
        """(domain, hash joined by tabs) pairs, flat, page by page: the domains still in
        `flushing` (read live, membership checked in the same call), then `snap`."""
        client = self._engine.node_for(shard.base)
        prefix = len(shard.domain(""))
        asked: set[str] = set()
        cursor: Any = 0
        while True:
            cursor, members = client.sscan(shard.flushing, cursor, count=self._page)
            fresh = [str(m) for m in dict.fromkeys(members) if m not in asked]
            asked.update(fresh)
            if fresh:
                reply = self._scripts.run(
                    "flush_page",
                    [shard.hydrated, shard.flushing, shard.flush_state]
                    + [shard.domain(domain) for domain in fresh],
                    [prefix],
                )
                if int(reply[0]) == 0:
                    raise EpochLostError(f"shard {shard.shard:02d} lost its data mid-flush")
                yield [str(item) for item in reply[1:]]
            if int(cursor) == 0:
                break
        cursor = 0
        while True:
            cursor, copied = client.hscan(shard.snap, cursor, count=self._page)
            flat = [str(item) for pair in cast(dict[str, str], copied).items() for item in pair]
            if flat:
                yield flat
            if int(cursor) == 0:
                break
        if not client.exists(shard.flush_state):
            raise EpochLostError(f"shard {shard.shard:02d} lost its epoch mid-flush")

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
    def _page_lines(flat: list[str], seen: set[str]) -> list[str]:
        lines: list[str] = []
        for index in range(0, len(flat), 2):
            domain, fields = str(flat[index]), str(flat[index + 1])
            if domain in seen or not fields:
                continue  # read twice by a cursor, or it had no hash at the close
            seen.add(domain)
            lines.append(line_from_hash(domain, fields))
        return lines
