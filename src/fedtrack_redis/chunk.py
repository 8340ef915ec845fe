"""One push.lua call: the wire format of a sealed chunk, built once and sent unchanged.

A chunk is sealed from a shard's pending deltas, and its exact bytes (the RESP-encoded
``EVALSHA``) are kept: a retry re-sends the same bytes, which is what lets push.lua's
``(worker, seq)`` check make every chunk count exactly once.

The per-domain data travels in one argument, one line per domain, because redis-py
encodes each argument in pure Python (1 to 2 µs each); a 400-domain chunk then costs one
string join instead of 1,600 argument encodings:

    <domain>|<queued>|<counters>|<histogram>[|<health>[|<ages>]]

``queued`` is the worker's absolute in-flight count or empty; ``counters`` is always
nine comma-separated deltas in `stats.COUNTER_FIELDS` order (so one strict pattern checks
a whole line); ``histogram`` is empty or
``bucket:count`` items separated by commas; ``health`` is present only when the row
holds outbound outcomes: ``<n>`` temporary failures, or ``s<n>`` an outbound success then
``n`` temporary failures (the order delivery health needs, docs/health.md). ``ages``
(after an empty 5th field when the line has no health) is the worker's absolute count of
in-flight messages per changed qshape column, ``column:count`` items, with a leading ``=``
on a line that carries nothing else (messages that only moved column: the domain is not
touched). Absent trailing fields mean nothing. Domains only hold ``a-z 0-9 . - :``, so
the separators can never be forged.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .batch import HEALTH, NOT_QUEUED, ROW_ID_SHIFT, outcome_text
from .keys import ShardKeys

#: Pending deltas of one domain: a batch row (`batch.Recorder`) whose slot 9 (the row id
#: in the batch) now holds its histogram ``{bucket: count}`` or None: the 8 counters
#: (3 failed, 3 success, inbound, total latency), the absolute in-flight count (or
#: NOT_QUEUED), the histogram; any further slots are ignored.
Pending = list[Any]
PENDING_BUCKETS = 9
BUCKET_MASK = (1 << ROW_ID_SHIFT) - 1
#: Acks of workers silent for this long are pruned by push.lua and by the flusher (a
#: retry after that could apply twice; no worker retries a chunk for a day).
ACK_RETENTION_SECONDS = 86_400
#: Most acks push.lua keeps per shard (the oldest beyond it are pruned, a few per call).
ACK_CAP = 100_000
#: Domains each of a shard's top lists keeps (failures, latency, queued).
TOP_SIZE = 1_000


@dataclass
class Chunk:
    """One sealed push.lua call for one shard."""

    shard: int
    seq: int
    domains: int
    #: Domains given an in-flight count > 0 (the worker holds a lease for them then).
    leased: tuple[str, ...]
    #: The complete RESP ``EVALSHA`` command, or b"" until packed for a script SHA.
    wire: bytes = b""
    #: What `wire` was packed for: (script SHA, expected database identity).
    packed_for: tuple[str, str] = ("", "")
    attempts: int = 0

    keys: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    #: The absolute in-flight counts this chunk carries (0 included): what the worker's
    #: lease hash holds for these domains once the chunk is applied.
    queued: dict[str, int] = field(default_factory=dict)
    #: push.lua's ARGV[8]: the health settings with this chunk's jitter seed, or "".
    health: str = ""

    def packed(self, sha: str, identity: str = "") -> bytes:
        """The RESP bytes of this call for script `sha`, expecting database `identity`.

        The deltas and ``(worker, seq)`` never change between retries; only what the
        worker learnt meanwhile (the identity, a reloaded script) may.
        """
        if self.packed_for != (sha, identity):
            self.wire = pack_command(
                "EVALSHA",
                sha,
                str(len(self.keys)),
                *self.keys,
                *self.args,
                identity,
                str(ACK_CAP),
                self.health,
            )
            self.packed_for = (sha, identity)
        return self.wire

    def renumbered(self, seq: int) -> None:
        """Give this chunk a new sequence number (only before Redis ever applied it)."""
        self.seq = seq
        worker, _old, *rest = self.args
        self.args = (worker, str(seq), *rest)
        self.packed_for = ("", "")


def pack_command(*items: str) -> bytes:
    """RESP encoding of one command whose arguments are ASCII strings."""
    parts = [f"*{len(items)}\r\n"]
    parts += [f"${len(item)}\r\n{item}\r\n" for item in items]
    return "".join(parts).encode("ascii")


def estimated_writes(entry: Pending) -> int:
    """Upper bound of the hash writes one pending domain costs push.lua."""
    buckets = entry[PENDING_BUCKETS]
    writes = 12 + (len(buckets) if buckets else 0)
    if len(entry) > HEALTH and entry[HEALTH]:
        # failures: the health record and held (an event now and then); a success alone:
        # at most the record of a failing domain removed
        writes += 2 if entry[HEALTH] > 1 else 1
    return writes


def seal(
    shard: ShardKeys,
    seq: int,
    worker_id: str,
    lease_ttl_ms: int,
    ack_retention_s: int,
    taken: Iterable[tuple[str, Pending]],
    *,
    health: str = "",
    ages: Mapping[str, Mapping[int, int]] | None = None,
) -> Chunk:
    """Encode `taken` (domain, pending deltas) as one push.lua call (see push.lua's header).

    `health` is push.lua's health settings without the seed (`HealthPolicy.script_spec`),
    or "" to send no health data at all. `ages` are the qshape columns (domain →
    {column: absolute count}) of those domains, and of other domains as lines that only
    carry ages.
    """
    keys = [
        shard.hydrated,
        shard.acks,
        shard.ack_seen,
        shard.active,
        shard.changed,
        shard.leases,
        shard.lease(worker_id),
        shard.flushing,
        shard.snap,
        shard.epoch_acks,
        shard.totals,
        shard.health,
        shard.held,
        shard.health_meta,
        shard.health_events,
        shard.series_minutes,
        shard.series_closed,
        shard.lease_ages(worker_id),
        shard.qshape,
        shard.qshape_top,
        shard.qshape_total,
    ]
    lines: list[str] = []
    carries_health = False
    leased: list[str] = []
    carried: dict[str, int] = {}
    domain_key = shard.domain
    for name, entry in taken:
        fh, fhs, fs, sh, shs, ss, inbound, latency, queued, buckets = entry[:10]
        keys.append(domain_key(name))
        if latency.__class__ is not int:
            latency = round(latency)  # fractional latencies are summed, then rounded per push
        successes = sh + shs + ss + inbound
        counters = f"{fh},{fhs},{fs},{sh},{shs},{ss},{successes},{inbound},{latency}"
        if queued == NOT_QUEUED:
            held = ""
        else:
            held = str(queued)
            carried[name] = queued
            if queued > 0:
                leased.append(name)
        histogram = ",".join([f"{b}:{c}" for b, c in buckets.items()]) if buckets else ""
        outcome = ""
        if health and len(entry) > HEALTH and entry[HEALTH]:
            outcome = outcome_text(entry[HEALTH])
            carries_health = True
        changed = ages.get(name) if ages else None
        if changed:
            columns = ",".join([f"{k}:{c}" for k, c in changed.items()])
            lines.append(f"{name}|{held}|{counters}|{histogram}|{outcome}|{columns}")
        elif outcome:
            lines.append(f"{name}|{held}|{counters}|{histogram}|{outcome}")
        else:
            lines.append(f"{name}|{held}|{counters}|{histogram}")
    if ages:
        carried_lines = {line[: line.index("|")] for line in lines}
        for name, changed in ages.items():
            if changed and name not in carried_lines:
                keys.append(domain_key(name))
                columns = ",".join([f"{k}:{c}" for k, c in changed.items()])
                lines.append(f"{name}||0,0,0,0,0,0,0,0,0|||={columns}")
    args = (worker_id, str(seq), str(lease_ttl_ms), str(ack_retention_s), "\n".join(lines))
    spec = f"{random.getrandbits(31)};{health}" if carries_health else ""
    return Chunk(
        shard.shard,
        seq,
        len(lines),
        tuple(leased),
        keys=tuple(keys),
        args=args,
        queued=carried,
        health=spec,
    )
