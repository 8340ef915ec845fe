"""The soak's seeded traffic and the workers' ledgers (what was recorded, what was acknowledged).

A worker's life is a sequence of *intervals*. For interval ``n`` it draws a seeded batch of
events, asks `check_federation_policy` about each one (a relay only talks to domains the
policy allows), and then, in this order:

1. writes a ``rec`` line holding the per-domain, per-field deltas of the events it is about
   to record (written *before* recording, so whatever the tracker holds is in the ledger);
2. records them (``record_success``, ``record_failure``, ``touch``, queue calls);
3. calls ``tracker.push(timeout)``; when it returns, writes ``ack n``: every interval up to
   ``n`` is acknowledged by Redis (``push()`` waits for everything pending, G2).

A worker that closes cleanly writes ``closed`` once ``close()`` returned (its last batch is
acknowledged too). A SIGKILLed worker's contribution to Redis is therefore between its
acknowledged totals and its recorded ones; the difference is the events it recorded after
its last acknowledged push, the G3 bound the ledger names.

Lines are JSON, each written with one ``os.write`` on an ``O_APPEND`` descriptor; a reader
ignores a torn last line (a SIGKILL in the middle of a write: those events were not
recorded yet).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedtrack_redis import normalize_domain

#: The counters of a domain, in the order of `ServerStat` and the table columns.
COUNTERS: tuple[str, ...] = (
    "failed_http",
    "failed_https",
    "failed_smtp",
    "success_http",
    "success_https",
    "success_smtp",
    "successful_deliveries",
    "inbound_deliveries",
    "total_latency_ms",
)
#: Counters that count one per event (so their sum is a number of events).
EVENT_COUNTERS: tuple[str, ...] = (
    "failed_http",
    "failed_https",
    "failed_smtp",
    "successful_deliveries",
)
TRANSPORTS: tuple[str, ...] = ("HTTP", "HTTPS", "SMTP")
LOCAL_DOMAIN = "mx.soak.local"

Totals = dict[str, dict[str, int]]
"""Per normalized domain, per field (the counters and histogram buckets ``h<b>``): a count."""


def bucket_of(latency_ms: int) -> int:
    """The documented latency bucket (docs/redis-keys.md): 0 below 1 ms, else
    ``floor(4·log2(ms)) + 1``, at most 100."""
    if latency_ms < 1:
        return 0
    return min(int(math.log2(latency_ms) * 4) + 1, 100)


def bucket_midpoint(bucket: int) -> float:
    """The value a percentile falling in `bucket` is reported as (docs/redis-keys.md)."""
    return 0.5 if bucket <= 0 else float(2 ** ((bucket - 0.5) / 4))


def percentile(buckets: dict[int, int], p: int) -> float:
    """Nearest-rank percentile of a histogram, as `ServerStat` reports it (0.0 if empty)."""
    total = sum(count for count in buckets.values() if count > 0)
    if total <= 0:
        return 0.0
    rank = -(-p * total // 100)
    running = 0
    for bucket in sorted(buckets):
        if buckets[bucket] > 0:
            running += buckets[bucket]
            if running >= rank:
                return bucket_midpoint(bucket)
    return bucket_midpoint(max(buckets))


def histogram(fields: dict[str, int]) -> dict[int, int]:
    return {int(name[1:]): count for name, count in fields.items() if name.startswith("h")}


# -- the traffic ------------------------------------------------------------------------------


def population(count: int) -> list[list[str]]:
    """`count` remote domains, each as the spellings workers use for it (the first is
    canonical). Some are upper-cased, dotted, address literals or Unicode, so the tracker's
    and the policy's normalization is on the path; the ledger keys by the normalized name."""
    domains: list[list[str]] = []
    for index in range(count):
        base = f"d{index:03d}.soak.example"
        if index % 23 == 5:
            domains.append([f"[192.0.2.{index % 250 + 1}]", f"192.0.2.{index % 250 + 1}"])
        elif index % 29 == 7:
            domains.append([f"[IPv6:2001:db8::{index:x}]", f"[2001:DB8:0::{index:x}]"])
        elif index % 17 == 3:
            unicode = f"bücher-{index}.soak.example"
            domains.append([unicode, normalize_domain(unicode), unicode.upper()])
        else:
            domains.append([base, base.upper(), base + "."])
    return domains


@dataclass(frozen=True)
class Event:
    kind: str  # success | failure | touch | enqueue | dequeue
    spelling: str
    domain: str  # normalized
    transport: str = ""
    latency_ms: int = 0


class Mix:
    """The seeded event stream of one worker generation: Zipf-like domain popularity,
    mostly HTTPS, a share of inbound deliveries, failures, touches and queue traffic."""

    def __init__(self, seed: int, domains: list[list[str]], per_interval: int) -> None:
        self.rng = random.Random(seed)
        self.per_interval = per_interval
        self.spellings = domains
        self.names = [normalize_domain(spellings[0]) for spellings in domains]
        for spellings, name in zip(domains, self.names, strict=True):
            for spelling in spellings:  # a typo in `population` would skew the ledger
                if normalize_domain(spelling) != name:
                    raise ValueError(f"{spelling!r} does not normalize to {name!r}")
        self.weights = [1 / (rank + 1) ** 0.9 for rank in range(len(domains))]
        self.inflight: list[tuple[str, str]] = []

    def interval(self) -> list[Event]:
        rng = self.rng
        picks = rng.choices(range(len(self.names)), self.weights, k=self.per_interval)
        events: list[Event] = []
        for index in picks:
            spelling = rng.choice(self.spellings[index])
            name = self.names[index]
            draw = rng.random()
            if draw < 0.50:
                transport = "" if rng.random() < 0.15 else rng.choice(("HTTPS",) * 6 + TRANSPORTS)
                latency = max(0, int(rng.lognormvariate(math.log(120), 1.1)))
                events.append(Event("success", spelling, name, transport, latency))
            elif draw < 0.80:
                transport = rng.choice(("HTTPS",) * 3 + TRANSPORTS).lower()
                events.append(Event("failure", spelling, name, transport))
            elif draw < 0.88:
                events.append(Event("touch", spelling, name))
            elif draw < 0.96 or not self.inflight:
                events.append(Event("enqueue", spelling, name))
            else:
                spelled, queued = self.inflight[rng.randrange(len(self.inflight))]
                events.append(Event("dequeue", spelled, queued))
            if events[-1].kind == "enqueue":
                self.inflight.append((spelling, name))
            elif events[-1].kind == "dequeue":
                self.inflight.remove((events[-1].spelling, events[-1].domain))
        return events


def deltas(events: Iterable[Event]) -> Totals:
    """What `events` add to each domain's counters and histogram (documented semantics)."""
    out: Totals = defaultdict(lambda: defaultdict(int))
    for event in events:
        if event.kind == "success":
            row = out[event.domain]
            row["successful_deliveries"] += 1
            row["total_latency_ms"] += event.latency_ms
            if event.transport:
                row[f"success_{event.transport.lower()}"] += 1
                row[f"h{bucket_of(event.latency_ms)}"] += 1
            else:
                row["inbound_deliveries"] += 1
        elif event.kind == "failure":
            out[event.domain][f"failed_{event.transport.lower()}"] += 1
    return {domain: dict(fields) for domain, fields in out.items()}


def count_events(totals: Totals) -> int:
    """Successes plus failures in `totals`."""
    return sum(fields.get(name, 0) for fields in totals.values() for name in EVENT_COUNTERS)


def add_into(target: Totals, more: Totals) -> None:
    for domain, fields in more.items():
        row = target.setdefault(domain, {})
        for name, value in fields.items():
            row[name] = row.get(name, 0) + value


# -- writing ------------------------------------------------------------------------------------


class LedgerWriter:
    """Append-only JSON lines, one ``os.write`` each (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **line: Any) -> None:
        os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


# -- reading ------------------------------------------------------------------------------------


@dataclass
class Interval:
    n: int
    recorded_at: float
    totals: Totals
    events: int
    acked_at: float | None = None


@dataclass
class Ledger:
    """One worker's ledger, read back."""

    worker: str
    path: Path
    started_at: float = 0.0
    intervals: list[Interval] = field(default_factory=list)
    #: (push started, push acknowledged) of every ``ack`` line.
    acks: list[tuple[float, float]] = field(default_factory=list)
    #: When each failed push (``fail`` line) gave up.
    fail_times: list[float] = field(default_factory=list)
    closed_at: float | None = None
    close_error: str | None = None
    torn_lines: int = 0

    @property
    def closed(self) -> bool:
        return self.closed_at is not None and self.close_error is None

    @property
    def ended_at(self) -> float:
        last = [self.started_at] + [i.recorded_at for i in self.intervals]
        last += [done for _, done in self.acks]
        return self.closed_at or max(last)

    def totals(self, *, acknowledged: bool) -> Totals:
        out: Totals = {}
        for interval in self.intervals:
            if self.closed or not acknowledged or interval.acked_at is not None:
                add_into(out, interval.totals)
        return out

    def unacknowledged(self) -> list[Interval]:
        """Intervals recorded after the last acknowledged push (none once closed)."""
        if self.closed:
            return []
        return [i for i in self.intervals if i.acked_at is None]

    def recorded_until(self, moment: float) -> Totals:
        out: Totals = {}
        for interval in self.intervals:
            if interval.recorded_at <= moment:
                add_into(out, interval.totals)
        return out

    def first_ack_after(self, moment: float) -> float | None:
        """When the first push that started at or after `moment` was acknowledged."""
        done = [ack for started, ack in self.acks if started >= moment]
        return min(done) if done else None


def read_ledger(path: Path) -> Ledger:
    ledger = Ledger(worker=path.stem.removeprefix("ledger-"), path=path)
    lines = path.read_bytes().split(b"\n")
    by_n: dict[int, Interval] = {}
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            if number < len(lines) - 2:  # only the last line may be torn
                raise ValueError(f"{path}: malformed line {number + 1}") from None
            ledger.torn_lines += 1
            continue
        kind = line["t"]
        if kind == "start":
            ledger.worker, ledger.started_at = line["worker"], line["time"]
        elif kind == "rec":
            interval = Interval(line["n"], line["time"], line["d"], line["events"])
            ledger.intervals.append(interval)
            by_n[interval.n] = interval
        elif kind == "ack":
            ledger.acks.append((line["started"], line["time"]))
            for interval in ledger.intervals:
                if interval.n <= line["n"] and interval.acked_at is None:
                    interval.acked_at = line["time"]
        elif kind == "fail":
            ledger.fail_times.append(line["time"])
        elif kind == "closed":
            ledger.closed_at, ledger.close_error = line["time"], line.get("error")
            if ledger.close_error is None:
                for interval in ledger.intervals:
                    if interval.acked_at is None:
                        interval.acked_at = line["time"]
    return ledger


def read_ledgers(directory: Path) -> list[Ledger]:
    return [read_ledger(path) for path in sorted(directory.glob("ledger-*.jsonl"))]


def iter_fields(*totals: Totals) -> Iterator[tuple[str, str]]:
    """Every (domain, field) present in any of `totals`."""
    seen: set[tuple[str, str]] = set()
    for one in totals:
        for domain, fields in one.items():
            for name in fields:
                if (domain, name) not in seen:
                    seen.add((domain, name))
                    yield domain, name
