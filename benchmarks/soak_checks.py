"""What the soak checks: readers of Redis and PostgreSQL, the sampling monitor that runs
for the whole soak, and the final checks against the workers' ledgers.

Redis is read through the public `StatsReader`; PostgreSQL with plain SQL on the
table ``federation_server_stats`` (one column per counter, ``latency_histogram`` as
``bucket:count,…``, docs/flusher.md).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.soak_ledger import (
    COUNTERS,
    EVENT_COUNTERS,
    Ledger,
    Totals,
    add_into,
    count_events,
    histogram,
    iter_fields,
    percentile,
)
from fedtrack_redis import FedtrackError, StatsReader

Rows = dict[str, dict[str, float]]
"""Per domain: counters, ``queued_messages``, ``last_active`` and either the histogram
buckets ``h<b>`` (PostgreSQL) or the percentiles ``p50``/``p95``/``p99`` (Redis)."""

PERCENTILES = (50, 95, 99)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def libpq(url: str) -> str:
    parsed = sa.make_url(url)
    return (
        f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432}"
        f" user={parsed.username or 'postgres'} dbname={parsed.database} connect_timeout=2"
    )


def read_pg(url: str) -> Rows:
    """Every row of ``federation_server_stats``."""
    columns = ", ".join(("queued_messages", *COUNTERS))
    query = (
        f"SELECT domain, {columns}, COALESCE(EXTRACT(EPOCH FROM last_active)::bigint, 0),"
        " latency_histogram FROM federation_server_stats"
    )
    rows: Rows = {}
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        for record in connection.execute(query):
            domain, *values, last_active, text = record
            row: dict[str, float] = dict(zip(("queued_messages", *COUNTERS), values, strict=True))
            row["last_active"] = last_active
            for pair in filter(None, str(text).split(",")):
                bucket, count = pair.split(":")
                row[f"h{int(bucket)}"] = int(count)
            rows[str(domain)] = row
    return rows


def read_redis(reader: StatsReader) -> Rows:
    rows: Rows = {}
    for stat in reader.get_all():
        row: dict[str, float] = {name: getattr(stat, name) for name in COUNTERS}
        row["queued_messages"] = stat.queued_messages
        row["last_active"] = stat.last_active
        row.update(p50=stat.p50_ms, p95=stat.p95_ms, p99=stat.p99_ms)
        rows[stat.domain] = row
    return rows


def field_sums(rows: Rows) -> dict[str, int]:
    return {name: int(sum(row.get(name, 0) for row in rows.values())) for name in COUNTERS}


def counters_equal(redis_rows: Rows, pg_rows: Rows) -> list[str]:
    """Differences of the event counters between Redis and PostgreSQL (a flush caught up?)."""
    out = []
    for domain in sorted(set(redis_rows) | set(pg_rows)):
        mine, theirs = redis_rows.get(domain, {}), pg_rows.get(domain, {})
        for name in COUNTERS:
            if mine.get(name, 0) != theirs.get(name, 0):
                out.append(f"{domain} {name}: Redis {mine.get(name, 0)} PG {theirs.get(name, 0)}")
    return out


# -- the monitor ----------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    sums: dict[str, int]


@dataclass
class Monitor:
    """Samples PostgreSQL (every 0.5 s) and Redis (every second) for the whole soak:

    * PostgreSQL never goes backwards (G6): no counter of any domain ever decreases;
    * Redis never goes backwards either, except while `unstable` (Redis restarted empty
      and not yet hydrated: the next sample after it is compared with the last before);
    * the per-field sums of every sample go to the check "never more than recorded";
    * no two flushers claim the lead at the same moment (fresh status files)."""

    pg_url: str
    reader: StatsReader
    statuses: Callable[[], dict[str, dict[str, Any]]]
    unstable: bool = False
    pg_samples: list[Sample] = field(default_factory=list)
    redis_samples: list[Sample] = field(default_factory=list)
    pg_decreases: list[str] = field(default_factory=list)
    redis_decreases: list[str] = field(default_factory=list)
    #: (time, who): two fresh status files claiming the lead within 0.1 s.
    two_leaders: list[tuple[float, str]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _reading: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def set_unstable(self, unstable: bool) -> None:
        """Redis is about to lose its data (or is whole again); returns once no Redis
        sample that started under the previous setting is still being read."""
        self.unstable = unstable
        with self._reading:
            pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        pg_last: Rows = {}
        redis_last: Rows = {}
        tick = 0
        while not self._stop.wait(0.25):
            tick += 1
            self._leaders()
            if tick % 2 == 0:
                pg_last = self._sample("pg", lambda: read_pg(self.pg_url), pg_last)
            if tick % 4 == 0:
                with self._reading:
                    unstable = self.unstable
                    rows = self._sample(
                        "redis", lambda: read_redis(self.reader), redis_last, unstable
                    )
                if not unstable:
                    redis_last = rows

    def _sample(self, kind: str, read: Callable[[], Rows], last: Rows, skip: bool = False) -> Rows:
        try:
            rows = read()
        except (psycopg.Error, FedtrackError, OSError) as exc:
            self.errors[f"{kind}: {type(exc).__name__}"] = (
                self.errors.get(f"{kind}: {type(exc).__name__}", 0) + 1
            )
            return last
        at = time.time()
        (self.pg_samples if kind == "pg" else self.redis_samples).append(
            Sample(at, field_sums(rows))
        )
        if skip:
            return last
        found = self.pg_decreases if kind == "pg" else self.redis_decreases
        for domain, before in last.items():
            now = rows.get(domain, {})
            for name in COUNTERS:
                if now.get(name, 0) < before.get(name, 0) and len(found) < 50:
                    found.append(
                        f"{time.strftime('%H:%M:%S', time.localtime(at))} {domain} {name}:"
                        f" {before[name]:.0f} -> {now.get(name, 0):.0f}"
                    )
        merged = dict(last)
        merged.update(rows)
        return merged

    def _leaders(self) -> None:
        now = time.time()
        claims = [
            (status["time"], name)
            for name, status in self.statuses().items()
            if status.get("role") == "flusher"
            and status.get("is_leader")
            and not status.get("stopped")
            and now - status["time"] < 0.5
        ]
        claims.sort()
        for (t1, n1), (t2, n2) in itertools.pairwise(claims):
            if t2 - t1 < 0.1 and len(self.two_leaders) < 200:
                self.two_leaders.append((t1, f"{n1} and {n2} both said they led"))


# -- the final checks ------------------------------------------------------------------------------


def check_redis_equals_pg(redis_rows: Rows, pg_rows: Rows) -> Check:
    """G5: once pushes stopped and the flushers converged, every row equals its hash."""
    problems: list[str] = []
    for domain in sorted(set(redis_rows) | set(pg_rows)):
        mine, theirs = redis_rows.get(domain), pg_rows.get(domain)
        if mine is None or theirs is None:
            problems.append(f"{domain}: only in {'PostgreSQL' if mine is None else 'Redis'}")
            continue
        for name in (*COUNTERS, "queued_messages", "last_active"):
            if mine.get(name, 0) != theirs.get(name, 0):
                problems.append(f"{domain} {name}: Redis {mine.get(name)} PG {theirs.get(name)}")
        buckets = histogram({k: int(v) for k, v in theirs.items()})
        for p in PERCENTILES:
            if abs(mine[f"p{p}"] - percentile(buckets, p)) > 1e-9:
                problems.append(f"{domain} p{p}: Redis {mine[f'p{p}']} PG {percentile(buckets, p)}")
    detail = f"{len(redis_rows)} domains, every counter, gauge, last_active and percentile"
    return Check("Redis = PostgreSQL (G5)", not problems, _summary(problems) or detail)


@dataclass
class LedgerSums:
    exact: Totals  # workers that closed: recorded = acknowledged
    killed_acked: Totals
    killed_recorded: Totals
    killed: list[Ledger]

    @property
    def bound(self) -> int:
        """Events the SIGKILLed workers recorded after their last acknowledged push (G3)."""
        return count_events(self.killed_recorded) - count_events(self.killed_acked)

    @property
    def recorded_events(self) -> int:
        return count_events(self.exact) + count_events(self.killed_recorded)


def ledger_sums(ledgers: list[Ledger]) -> LedgerSums:
    sums = LedgerSums({}, {}, {}, [])
    for ledger in ledgers:
        if ledger.closed:
            add_into(sums.exact, ledger.totals(acknowledged=False))
        else:
            sums.killed.append(ledger)
            add_into(sums.killed_acked, ledger.totals(acknowledged=True))
            add_into(sums.killed_recorded, ledger.totals(acknowledged=False))
    return sums


def check_against_ledgers(
    label: str, rows: Rows, sums: LedgerSums, fields: tuple[str, ...]
) -> Check:
    """Every (domain, field): closed workers' totals + killed workers' acknowledged ≤ value
    ≤ closed + killed recorded; exact when no worker was killed."""
    problems: list[str] = []
    found: Totals = {d: {k: int(v) for k, v in row.items()} for d, row in rows.items()}
    for domain, name in iter_fields(found, sums.exact, sums.killed_recorded):
        if name not in fields and not (name.startswith("h") and "h" in fields):
            continue
        exact = sums.exact.get(domain, {}).get(name, 0)
        low = exact + sums.killed_acked.get(domain, {}).get(name, 0)
        high = exact + sums.killed_recorded.get(domain, {}).get(name, 0)
        value = found.get(domain, {}).get(name, 0)
        if not low <= value <= high:
            bounds = f"{low}" if low == high else f"[{low}, {high}]"
            problems.append(f"{domain} {name}: {value}, ledgers say {bounds}")
    stored = sum(row.get(name, 0) for row in found.values() for name in EVENT_COUNTERS)
    lost = sums.recorded_events - stored
    detail = (
        f"{sums.recorded_events} events recorded, {stored} stored; lost {lost}"
        f" (bound: {sums.bound} events recorded by {len(sums.killed)} SIGKILLed worker(s)"
        " after their last acknowledged push)"
    )
    if problems:
        detail = f"{_summary(problems)}; {detail}"
    return Check(f"{label} = the ledgers' acknowledged sums", not problems, detail)


def check_g3(rows: Rows, sums: LedgerSums, kills: dict[str, float], window: float) -> Check:
    """G3: a SIGKILLed worker loses at most the events of its last push interval: what the
    killed workers recorded and PostgreSQL lacks is at most what they recorded in the
    `window` seconds before their SIGKILL (the push interval plus a push in flight)."""
    stored = int(sum(row.get(name, 0) for row in rows.values() for name in EVENT_COUNTERS))
    lost = sums.recorded_events - stored
    allowed = sum(
        interval.events
        for ledger in sums.killed
        for interval in ledger.intervals
        if kills.get(ledger.worker, 0) - window
        < interval.recorded_at
        <= kills.get(ledger.worker, 0)
    )
    detail = (
        f"{len(sums.killed)} SIGKILLed worker(s) lost {lost} events; they recorded {allowed}"
        f" in the {window:g} s before their SIGKILL (the push interval plus a push in flight)"
    )
    return Check(
        "G3: a SIGKILLed worker loses at most its last push interval", 0 <= lost <= allowed, detail
    )


def check_never_ahead(label: str, samples: list[Sample], ledgers: list[Ledger]) -> Check:
    """At every sample, no field sum exceeds what the workers had recorded by then (an
    event counted twice — a retry applied again, a double hydration — would)."""
    intervals = sorted(
        ((i.recorded_at, i.totals) for ledger in ledgers for i in ledger.intervals),
        key=lambda interval: interval[0],  # two ledgers may stamp the same instant
    )
    times = [at for at, _ in intervals]
    cumulative: list[dict[str, int]] = []
    running = dict.fromkeys(COUNTERS, 0)
    for _at, totals in intervals:
        for fields in totals.values():
            for name in COUNTERS:
                running[name] += fields.get(name, 0)
        cumulative.append(dict(running))
    problems = []
    for sample in samples:
        index = bisect.bisect_right(times, sample.at) - 1
        allowed = cumulative[index] if index >= 0 else dict.fromkeys(COUNTERS, 0)
        for name in COUNTERS:
            if sample.sums.get(name, 0) > allowed[name]:
                problems.append(
                    f"{time.strftime('%H:%M:%S', time.localtime(sample.at))} {name}:"
                    f" {sample.sums[name]} > {allowed[name]} recorded"
                )
    detail = f"{len(samples)} samples"
    return Check(f"{label} never ahead of the ledgers", not problems, _summary(problems) or detail)


def check_list(name: str, problems: list[str], detail: str) -> Check:
    return Check(name, not problems, _summary(problems) or detail)


def _summary(problems: list[str]) -> str:
    if not problems:
        return ""
    shown = "; ".join(problems[:5])
    return f"{len(problems)} problem(s): {shown}" + (" …" if len(problems) > 5 else "")


def dump_database(url: str) -> dict[str, tuple[int, str]]:
    """(row count, hash of every row) per table: to prove nothing was written there."""
    engine = sa.create_engine(url)
    try:
        tables = sa.inspect(engine).get_table_names()
        out: dict[str, tuple[int, str]] = {}
        with engine.connect() as connection:
            for table in tables:
                rows = connection.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
                text = "\n".join(sorted(repr(tuple(row)) for row in rows))
                out[table] = (len(rows), hashlib.sha1(text.encode()).hexdigest()[:16])
        return out
    finally:
        with contextlib.suppress(Exception):
            engine.dispose()
