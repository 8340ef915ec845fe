"""The soak's verdict: every check, and the table of what each fault cost, printed and
written as Markdown (for ``benchmarks/RESULTS.md``).

Per fault, from the ledgers (wall-clock times of the workers' own lines):

* *pushes resumed*: the latest, over the workers that lived through the fault, of the
  first acknowledged push that started after the fault began;
* *unconfirmed at fault*: events recorded but not yet confirmed by an acknowledged
  ``push()`` of their worker when it began (the tracker's own thread may already have
  pushed some of them; the ledger only knows what ``push()`` confirmed);
* *delayed > 1 s*: events recorded around the fault (from 2 s before it to the end of its
  recovery) whose confirmation came more than 1 s later than the worker's next
  ``push()`` would normally bring it (one ``interval``);
* *longest wait*: the longest such wait; *failed pushes*: ``push()`` calls that timed out;
* *lost*: for a SIGKILLed worker, the events it recorded after its last acknowledged
  push (G3's bound); else 0 when the ledger checks hold exactly.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from benchmarks.soak_checks import (
    Check,
    check_against_ledgers,
    check_g3,
    check_list,
    check_never_ahead,
    check_redis_equals_pg,
    ledger_sums,
)
from benchmarks.soak_engines import admin_client
from benchmarks.soak_faults import WRONG_DB_PROBES, FaultRecord
from benchmarks.soak_final import Outcome
from benchmarks.soak_ledger import COUNTERS, Ledger

if TYPE_CHECKING:
    from benchmarks.soak import Soak

#: An event waited longer than this (beyond the worker's own push period) to be acknowledged.
DELAYED = 1.0
#: Seconds beyond the push interval a SIGKILL may find a push in flight (G3's bound).
G3_MARGIN = 0.25


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def build_checks(soak: Soak, outcome: Outcome) -> list[Check]:
    monitor = soak.monitor
    sums = ledger_sums(outcome.ledgers)
    checks = list(outcome.checks)
    checks.append(check_redis_equals_pg(outcome.redis_rows, outcome.pg_rows))
    histogram = (*COUNTERS, "h")
    checks.append(check_against_ledgers("PostgreSQL", outcome.pg_rows, sums, histogram))
    checks.append(check_against_ledgers("Redis", outcome.redis_rows, sums, COUNTERS))
    kills = {f.killed_worker: f.started for f in soak.faults if f.killed_worker}
    window = soak.config.push_interval + G3_MARGIN
    checks.append(check_g3(outcome.pg_rows, sums, kills, window))
    stopped = {
        p.worker_id for p in soak.procs.values() if p.role == "worker" and p.state == "stopped"
    }
    unclosed = [
        f"{ledger.worker}: {ledger.close_error or 'no closed line'}"
        for ledger in outcome.ledgers
        if ledger.worker in stopped and not ledger.closed
    ]
    lives = f"{len(stopped)} workers closed, {len(sums.killed)} SIGKILLed"
    checks.append(check_list("every stopped worker closed cleanly", unclosed, lives))
    samples = f"{len(monitor.pg_samples)} samples, every domain and counter"
    checks.append(check_list("PostgreSQL never went backwards (G6)", monitor.pg_decreases, samples))
    samples = f"{len(monitor.redis_samples)} samples, outside the restart drill"
    checks.append(check_list("Redis never went backwards", monitor.redis_decreases, samples))
    checks.append(check_never_ahead("PostgreSQL", monitor.pg_samples, outcome.ledgers))
    checks.append(check_never_ahead("Redis", monitor.redis_samples, outcome.ledgers))
    checks.append(_two_leaders(soak))
    faults = [f"{f.name}: {problem}" for f in soak.faults for problem in f.problems]
    checks.append(check_list("every fault recovered in time", faults, f"{len(soak.faults)} faults"))
    checks.append(_wrong_db(soak, outcome))
    threads = []
    for name, status in outcome.statuses.items():
        threads += [f"{name}: thread {thread} died" for thread in status.get("threads_died", [])]
        threads += [
            f"{name}: {count:.0f} unexpected error(s) in {thread}"
            for thread, count in status.get("thread_errors", {}).items()
            if count
        ]
    processes = f"{len(outcome.statuses)} processes"
    checks.append(check_list("no library thread died or met an error", threads, processes))
    checks.append(check_list("no process exited by itself", soak.unexpected, "none did"))
    ops = [line for line in outcome.operator_log if line["t"] == "op"]
    undone = [f"{line['op']} {line['arg']}: gave up" for line in ops if not line["done"]]
    checks.append(check_list("every operator change committed", undone, f"{len(ops)} changes"))
    foreign = [
        f"{line['op']}({line['arg']!r}): {error}"
        for line in ops
        for error in line["errors"]
        if error.startswith("UNEXPECTED")
    ]
    retried = sum(len(line["errors"]) for line in ops)
    detail = f"{retried} errors met and retried, each a FedtrackError"
    checks.append(check_list("the policy store raised only FedtrackErrors", foreign, detail))
    return checks


#: Faults during which Redis loses the flusher lock: its holder keeps believing it leads
#: until its next renewal while another flusher takes the free lock (fencing refuses the
#: old one's writes: docs/engines.md, G10).
LOCK_LOST = ("sentinel-failover", "redis-restart")


def _two_leaders(soak: Soak) -> Check:
    windows = [
        (f, f.started, f.ended + soak.config.lock_ttl) for f in soak.faults if f.name in LOCK_LOST
    ]
    problems = []
    for at, who in soak.monitor.two_leaders:
        inside = [f for f, start, end in windows if start <= at <= end]
        if inside:
            note = f"{who} for a moment (the lock was lost with Redis's data; fencing)"
            if note not in inside[0].notes:
                inside[0].notes.append(note)
        else:
            problems.append(f"{time.strftime('%H:%M:%S', time.localtime(at))}: {who}")
    detail = "status files every 0.2 s, outside the faults that lose the lock with Redis's data"
    return check_list("never two flusher leaders at once", problems, detail)


def _wrong_db(soak: Soak, outcome: Outcome) -> Check:
    status = outcome.statuses.get("wrongdb")
    if status is None or "wrong-db" in soak.options.skip:
        return Check("the wrong database refused everything (G11)", True, "fault skipped")
    problems = [f"{text} (x{count})" for text, count in status.get("violations", {}).items()]
    refused = status.get("refused", {})
    problems += [f"{probe}: never refused" for probe in WRONG_DB_PROBES if not refused.get(probe)]
    for url, before in soak.wrong_before.items():
        after = outcome.wrong_after.get(url, {})
        changed = [
            table
            for table in sorted(set(before) | set(after))
            if before.get(table) != after.get(table)
        ]
        if changed:
            problems.append(f"{url.split('/')[-1]}: tables written: {', '.join(changed)}")
    detail = (
        f"{sum(refused.values())} probes refused with DatabaseMismatchError, no flusher of it"
        " led, its databases unchanged"
    )
    return check_list("the wrong database refused everything (G11)", problems, detail)


# -- the fault table ------------------------------------------------------------------------------


def fault_costs(
    record: FaultRecord, ledgers: list[Ledger], exact: bool, period: float, until: float
) -> dict[str, str]:
    """What `record`'s fault cost, from the ledgers; its window ends at `until` (the end of
    its recovery, or the next fault's start when that came first)."""
    t0, end = record.started, min(record.ended, until)
    others = [ledger for ledger in ledgers if ledger.worker != record.killed_worker]
    through = [ledger for ledger in others if ledger.started_at <= t0 and ledger.ended_at >= end]
    firsts = [ledger.first_ack_after(t0) for ledger in through]
    resumed = "—"
    if firsts and all(first is not None for first in firsts):
        resumed = seconds(max(first for first in firsts if first is not None) - t0)
    alive = [
        ledger
        for ledger in ledgers
        if ledger.started_at <= t0 <= ledger.ended_at or ledger.worker == record.killed_worker
    ]
    pending = sum(
        interval.events
        for ledger in alive
        for interval in ledger.intervals
        if interval.recorded_at <= t0 and (interval.acked_at is None or interval.acked_at > t0)
    )
    window = [
        interval
        for ledger in others
        for interval in ledger.intervals
        if t0 - 2 <= interval.recorded_at <= end
    ]
    waits = [(i.acked_at if i.acked_at is not None else math.inf) - i.recorded_at for i in window]
    delayed = sum(
        i.events for i, wait in zip(window, waits, strict=True) if wait > period + DELAYED
    )
    failed = sum(1 for ledger in ledgers for at in ledger.fail_times if t0 <= at <= end)
    lost = "0" if exact else "see checks"
    if record.killed_worker:
        killed = [ledger for ledger in ledgers if ledger.worker == record.killed_worker]
        bound = sum(i.events for ledger in killed for i in ledger.unacknowledged())
        lost = f"≤ {bound} (recorded after its last acknowledged push)"
    return {
        "recovery": "; ".join(
            f"{label} {seconds:.1f} s" for label, seconds in record.recovery.items()
        ),
        "resumed": resumed,
        "pending": str(pending),
        "delayed": str(delayed),
        "wait": seconds(max(waits)) if waits and max(waits) < math.inf else "—",
        "failed": str(failed),
        "lost": lost,
    }


def fault_table(soak: Soak, outcome: Outcome, exact: bool) -> list[str]:
    lines = [
        "| # | fault | at | recovery (seconds after the fault began) | pushes resumed"
        " | unconfirmed at fault | delayed > 1 s | longest wait | failed pushes | lost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, record in enumerate(soak.faults, 1):
        after = soak.faults[index].started if index < len(soak.faults) else record.ended
        cost = fault_costs(record, outcome.ledgers, exact, soak.config.interval, after)
        title = record.title + ("" if not record.notes else f" ({'; '.join(record.notes)})")
        if record.problems:
            title += " **PROBLEM: " + "; ".join(record.problems)[:300] + "**"
        lines.append(
            f"| {index} | {title} | {record.started - soak.t0:.0f} s | {cost['recovery']}"
            f" | {cost['resumed']} | {cost['pending']} | {cost['delayed']} | {cost['wait']}"
            f" | {cost['failed']} | {cost['lost']} |"
        )
    return lines


def markdown(soak: Soak, outcome: Outcome, checks: list[Check]) -> str:
    options = soak.options
    failed = [check for check in checks if not check.ok]
    master = admin_client(soak.sentinels.master_port(), timeout=2.0)
    try:
        version = master.info("server")["redis_version"]
    except redis.RedisError:
        version = "?"
    finally:
        master.close()
    sums = ledger_sums(outcome.ledgers)
    exact = not any(c.name.endswith("acknowledged sums") and not c.ok for c in checks)
    skips = "".join(f" --skip {name}" for name in options.skip)
    lines = [
        f"# Soak with faults: {'PASSED' if not failed else f'FAILED ({len(failed)} checks)'}",
        "",
        f"`python -m benchmarks.soak --minutes {options.minutes:g} --workers {options.workers}"
        f" --seed {options.seed}{skips}`"
        f" on {platform.machine()}, {_cores()} cores, Python {platform.python_version()};"
        f" redis-server {version} as a Sentinel set (1 master, 2 replicas, 3 sentinels,"
        f" `wait_replicas=2`), a throwaway PostgreSQL; {options.workers} workers"
        f" ({options.events} events every 0.1 s each over {options.domains} domains, a"
        f" push() every {soak.config.interval:g} s, the tracker's own every"
        f" {soak.config.push_interval:g} s), 2 flushers"
        f" (flush every {soak.config.flush_interval:g} s, lock TTL {soak.config.lock_ttl:g} s),"
        " 1 operator.",
        "",
        f"{sums.recorded_events} events recorded (successes and failures);"
        f" {len(outcome.ledgers)} worker lives, {len(sums.killed)} of them SIGKILLed.",
        "",
        "Redis restarted empty is a controlled drill: the workers are paused until a flush"
        " has caught PostgreSQL up, then every data node restarts empty; the paused workers'"
        " pushes are refused until the flusher leader has hydrated Redis, and nothing"
        " acknowledged is lost (with no persistence, anything acknowledged after the last"
        " flush would be lost otherwise: inherent, not a bug).",
        "",
        "## What each fault cost",
        "",
        *fault_table(soak, outcome, exact),
        "",
        "## Checks",
        "",
        *[f"- **{'PASS' if c.ok else 'FAIL'}** {c.name}: {c.detail}" for c in checks],
        "",
    ]
    return "\n".join(lines)


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def publish(soak: Soak, outcome: Outcome, output: Path | None) -> bool:
    checks = build_checks(soak, outcome)
    text = markdown(soak, outcome, checks)
    print()
    print(text, flush=True)
    path = output or soak.run_dir / "soak-results.md"
    path.write_text(text)
    print(f"wrote {path}", flush=True)
    return all(check.ok for check in checks)
