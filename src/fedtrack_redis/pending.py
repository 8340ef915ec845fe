"""Per-shard queues of one worker's deltas on their way to Redis (the push's bookkeeping).

For each of the 16 shards: *pending* deltas, which may still merge with newer ones, then
*sealed* chunks (`chunk.Chunk`), immutable, the head one in flight. `ShardQueues` turns
swapped batches into pending deltas (`absorb`), seals chunks of at most `CHUNK_DOMAINS`
domains (`seal_next`) and decides when a shard needs a lease heartbeat or must re-send
its in-flight counts. Beside the deltas, each shard keeps the qshape columns that changed
(`ages.AgeTracker`; absolute counts, so newer ones simply replace older ones) until a chunk
carries them: with its domain's line, or on a line of their own. It does no I/O:
`pusher.Pusher` sends the chunks.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from .ages import AgeTracker
from .batch import (
    FIRST_BUCKET,
    FIRST_COUNT,
    HEALTH,
    LATENCY,
    NOT_QUEUED,
    QUEUED,
    ROW_ID_SHIFT,
    SECOND_BUCKET,
    SECOND_COUNT,
    THIRD_BUCKET,
    THIRD_COUNT,
    Batch,
    Recorder,
    inflight_snapshot,
    merge_outcomes,
)
from .chunk import (
    ACK_RETENTION_SECONDS,
    BUCKET_MASK,
    PENDING_BUCKETS,
    Chunk,
    Pending,
    estimated_writes,
    seal,
)
from .domain import DEFAULT_MEMO
from .keys import NamespaceKeys, ShardKeys, shard_of

#: Most domains in one push.lua call (a few ms of script time on a 2-core machine). A
#: chunk whose domains all write their first time in a 5-minute history bucket costs about
#: twice a usual one: 128 such domains took 12.6 ms on a busy host, 96 keep under 10 ms.
CHUNK_DOMAINS = 96
#: Most hash writes (estimated) in one call, for domains with many histogram buckets.
CHUNK_WRITES = 2_000


@dataclass
class ShardState:
    """The push state of one shard: unsent deltas, then sealed chunks (head in flight)."""

    keys: ShardKeys
    seq: int
    pending: dict[str, Pending] = field(default_factory=dict)
    sealed: deque[Chunk] = field(default_factory=deque)
    last_ack: float = 0.0
    reassert: bool = False
    #: In-flight counts > 0 sent in sealed chunks: what the lease hash holds once they
    #: are applied. An unchanged count is not sent again (no lease lookup in push.lua).
    sent: dict[str, int] = field(default_factory=dict)
    leased: bool = False
    heartbeat: bool = False
    #: qshape columns not sealed yet: domain → {column: absolute count}.
    ages: dict[str, dict[int, int]] = field(default_factory=dict)


class ShardQueues:
    """The 16 shards' pending deltas and sealed chunks of one worker."""

    def __init__(
        self, recorder: Recorder, keys: NamespaceKeys, worker_id: str, lease_ttl: float
    ) -> None:
        self._recorder = recorder
        self._worker = worker_id
        self._lease_ttl_ms = max(1, int(lease_ttl * 1000))
        self._heartbeat_every = lease_ttl / 3
        # Start above any seq this worker id may have used before (a restarted process
        # that reuses an explicit worker id must not look like a duplicate).
        first_seq = time.time_ns() // 1000
        self.shards = [ShardState(shard, first_seq) for shard in keys.shards]
        self._shard_cache: dict[str, int] = {}
        #: push.lua's health settings per shard (`health.sync.HealthLink.specs`); empty:
        #: chunks carry no health data.
        self.health_specs: list[str] = []
        self.ages = AgeTracker(recorder)

    def absorb_ages(self, now: float, batch: Batch | None) -> None:
        """Add the qshape columns that changed by `now` (worker clock) to their shards: of
        the domains whose count `batch` carries, and of those whose messages aged into
        another column. (Call before `absorb`, which may clear the counts it passes.)"""
        touched = (
            {name for name, row in batch.rows.items() if row[QUEUED] != NOT_QUEUED}
            if (batch is not None)
            else set()
        )
        shards = self.shards
        for name, changed in self.ages.changes(now, touched).items():
            held = shards[self._shard(name)].ages
            if name in held:
                held[name].update(changed)
            else:
                held[name] = changed

    def pending_domains(self) -> int:
        """Domains pending or sealed (not yet acknowledged)."""
        return sum(
            len(state.pending) + sum(chunk.domains for chunk in state.sealed)
            for state in self.shards
        )

    def heads(self) -> list[Chunk]:
        """The chunk each shard sends now (sealing one where needed)."""
        return [chunk for state in self.shards if (chunk := self.head(state))]

    def acknowledged(self, chunk: Chunk, applied: bool, lease_absent: bool) -> None:
        """Push.lua acknowledged the head chunk of its shard (applied, or a duplicate)."""
        state = self.shards[chunk.shard]
        state.sealed.popleft()
        state.last_ack = time.monotonic()
        if applied and lease_absent:
            # The lease hash held nothing before this chunk: now it holds what this chunk
            # and the chunks sealed after it carry. Every other count goes again.
            state.reassert = True
            lease: dict[str, int] = {}
            for carrier in (chunk, *state.sealed):
                for name, count in carrier.queued.items():
                    if count:
                        lease[name] = count
                    else:
                        lease.pop(name, None)
            state.sent = lease
        if chunk.leased:
            state.leased = True

    def renumber(self, shard: int, stored: int) -> None:
        """Redis holds a higher seq for this worker than the head chunk's: an earlier life
        of this worker id used it (a restart after a clock step back). Nothing sealed was
        applied, so renumber every sealed chunk of the shard from ``stored + 1``."""
        state = self.shards[shard]
        for offset, chunk in enumerate(state.sealed, start=1):
            chunk.renumbered(stored + offset)
        state.seq = stored + len(state.sealed)

    def check_all_leases(self) -> None:
        """Make every shard where this worker holds in-flight messages check its lease."""
        for state in self.shards:
            if state.leased and not state.sealed:
                state.heartbeat = True

    def reasserting(self) -> bool:
        """Some shard must re-send its in-flight counts (its lease was found absent)."""
        return any(state.reassert for state in self.shards)

    def seal_ahead(self, calls: list[Chunk]) -> None:
        """Seal the next chunk of each shard in `calls` (while Redis runs these)."""
        for chunk in calls:
            state = self.shards[chunk.shard]
            if len(state.sealed) < 2:
                self.seal_next(state)

    def absorb(self, batch: Batch) -> None:
        """Add a swapped batch to the pending deltas of each shard.

        A batch row becomes the pending entry itself (its row-id slot now holds the
        histogram dict), so the common case copies nothing.
        """
        rows, histogram = batch
        extra: dict[int, dict[int, int]] = {}
        for key, count in histogram.items():
            extra.setdefault(key >> ROW_ID_SHIFT, {})[key & BUCKET_MASK] = count
        cache = self._shard_cache
        if len(cache) > 500_000:
            cache.clear()
        require = DEFAULT_MEMO.require
        shards = self.shards
        for index, (spelling, row) in enumerate(rows.items()):
            buckets = extra.get(index) if extra else None
            first = row[FIRST_BUCKET]
            if first >= 0:
                second = row[SECOND_BUCKET]
                if buckets is None and second < 0:
                    buckets = {first: row[FIRST_COUNT]}
                else:
                    if buckets is None:
                        buckets = {}
                    buckets[first] = buckets.get(first, 0) + row[FIRST_COUNT]
                    if second >= 0:
                        buckets[second] = buckets.get(second, 0) + row[SECOND_COUNT]
                        third = row[THIRD_BUCKET]
                        if third >= 0:
                            buckets[third] = buckets.get(third, 0) + row[THIRD_COUNT]
            row[PENDING_BUCKETS] = buckets
            name = require(spelling)
            shard = cache.get(name)
            if shard is None:
                shard = cache[name] = shard_of(name)
            pending = shards[shard].pending
            held = pending.get(name)
            if held is None:
                pending[name] = row
            else:
                _merge(held, row)

    def plan_heartbeats(self) -> None:
        """Mark leased shards whose lease needs refreshing; forget shards without one."""
        now = time.monotonic()
        due = [s for s in self.shards if s.leased and now - s.last_ack >= self._heartbeat_every]
        if not due:
            return
        held = {self._shard(name) for name in inflight_snapshot(self._recorder)}
        for state in due:
            if state.keys.shard in held:
                state.heartbeat = True
            else:
                state.leased = False

    def next_heartbeat(self) -> float:
        times = [s.last_ack + self._heartbeat_every for s in self.shards if s.leased]
        return min(times) if times else float("inf")

    def _shard(self, name: str) -> int:
        shard = self._shard_cache.get(name)
        if shard is None:
            shard = self._shard_cache[name] = shard_of(name)
        return shard

    def head(self, state: ShardState) -> Chunk | None:
        """The shard's chunk to send now (sealing one when needed), or None."""
        if not state.sealed:
            self.seal_next(state)
        return state.sealed[0] if state.sealed else None

    def seal_next(self, state: ShardState) -> None:
        """Seal the shard's next chunk from its pending deltas, if there is anything."""
        if state.reassert:
            self._reassert(state)
        if not state.pending and not state.heartbeat and not state.ages:
            return
        state.heartbeat = False
        pending = state.pending
        taken: list[tuple[str, Pending]]
        if len(pending) <= CHUNK_DOMAINS and (
            sum(map(estimated_writes, pending.values())) <= CHUNK_WRITES
        ):
            taken = list(pending.items())
            state.pending = {}
        else:
            taken = []
            writes = 0
            for name, entry in islice(pending.items(), CHUNK_DOMAINS):
                writes += estimated_writes(entry)
                if taken and writes > CHUNK_WRITES:
                    break
                taken.append((name, entry))
            for name, _entry in taken:
                del pending[name]
        sent = state.sent
        for name, entry in taken:
            queued = entry[QUEUED]
            if queued != NOT_QUEUED:
                if queued == sent.get(name, 0):
                    entry[QUEUED] = NOT_QUEUED
                elif queued:
                    sent[name] = queued
                else:
                    del sent[name]
        state.seq += 1
        state.sealed.append(
            seal(
                state.keys,
                state.seq,
                self._worker,
                self._lease_ttl_ms,
                ACK_RETENTION_SECONDS,
                taken,
                health=self.health_specs[state.keys.shard] if self.health_specs else "",
                ages=self._take_ages(state, taken),
            )
        )

    def _take_ages(
        self, state: ShardState, taken: list[tuple[str, Pending]]
    ) -> dict[str, dict[int, int]] | None:
        """The qshape columns the next chunk carries: those of its domains, then, up to
        `CHUNK_DOMAINS` lines, those of domains with nothing else pending (a domain whose
        deltas wait for a later chunk keeps its columns for that chunk, so a lease never
        holds ages before the count they belong to)."""
        held = state.ages
        if not held:
            return None
        carried: dict[str, dict[int, int]] = {}
        for name, _entry in taken:
            changed = held.pop(name, None)
            if changed:
                carried[name] = changed
        room = CHUNK_DOMAINS - len(taken)
        if room > 0 and held:
            pending = state.pending
            alone = [name for name in islice(held, room * 2) if name not in pending][:room]
            for name in alone:
                carried[name] = held.pop(name)
        return carried

    def _reassert(self, state: ShardState) -> None:
        """Put every in-flight count of the shard in its pending deltas (lease was lost)."""
        state.reassert = False
        pending = state.pending
        held_here = False
        for name, count in inflight_snapshot(self._recorder).items():
            if self._shard(name) != state.keys.shard:
                continue
            held_here = True
            held = pending.get(name)
            if held is None:
                pending[name] = [0, 0, 0, 0, 0, 0, 0, 0, count, None, -1, 0, -1, 0, 0]
            else:
                held[QUEUED] = count
            full = self.ages.full(name)
            if full:  # absolute counts: the lease starts empty again
                state.ages.setdefault(name, {}).update(full)
        if not held_here:
            state.leased = False


def _merge(held: Pending, row: Pending) -> None:
    """Add a newer pending entry of the same domain into `held` (newest in-flight wins;
    a newer outbound success wipes the older failure tail)."""
    for index in range(LATENCY + 1):
        held[index] += row[index]
    if row[QUEUED] != NOT_QUEUED:
        held[QUEUED] = row[QUEUED]
    if len(row) > HEALTH and len(held) > HEALTH:
        held[HEALTH] = merge_outcomes(held[HEALTH], row[HEALTH])
    buckets = row[PENDING_BUCKETS]
    if buckets:
        merged = held[PENDING_BUCKETS]
        if merged is None:
            held[PENDING_BUCKETS] = dict(buckets)
            return
        for bucket, count in buckets.items():
            merged[bucket] = merged.get(bucket, 0) + count
