"""The end of a soak: stop the load in order, let everything converge (each wait with a
deadline), and gather what the final checks need.

Order: the operator stops first (its log then holds the state it intended), and while the
workers and flushers still run, every live process must come to hold the database's
rules; then the workers close (``close()`` pushes what is left), the misconfigured
process stops, the queue gauges must fall to 0 (a SIGKILLed worker's lease expires, G8),
PostgreSQL must equal Redis (G5), and the flushers stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks.soak_checks import (
    Check,
    Rows,
    check_redis_equals_pg,
    dump_database,
    libpq,
    read_pg,
    read_redis,
)
from benchmarks.soak_faults import RecoveryTimeoutError
from benchmarks.soak_ledger import Ledger, read_ledgers
from benchmarks.soak_process import rules_digest
from fedtrack_redis import PolicyStore

if TYPE_CHECKING:
    from benchmarks.soak import Soak


@dataclass
class Outcome:
    ledgers: list[Ledger]
    redis_rows: Rows
    pg_rows: Rows
    checks: list[Check]
    statuses: dict[str, dict[str, Any]]
    operator_log: list[dict[str, Any]]
    wrong_after: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)


def read_database_rules(url: str) -> tuple[set[str], str]:
    """The rules and the policy as the database holds them (its tables; the rule's text
    is the ``domain`` column, or ``text`` should rules v2 rename it)."""
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        cursor = connection.execute("SELECT * FROM federation_rules")
        names = [column.name for column in cursor.description or ()]
        index = names.index("domain" if "domain" in names else "text")
        rules = {str(row[index]) for row in cursor}
        row = connection.execute(
            "SELECT value FROM federation_settings WHERE key = 'policy'"
        ).fetchone()
    return rules, str(row[0]) if row else "ACCEPT"


def rules_checks(soak: Soak) -> list[Check]:
    finals = [line for line in soak.operator_log() if line["t"] == "final"]
    if not finals:
        return [Check("the operator logged its final state", False, "no final line")]
    intended = (set(finals[-1]["rules"]), str(finals[-1]["policy"]))
    database = read_database_rules(soak.database_url)
    store = PolicyStore(soak.database_url, soak.config.redis_url, namespace=soak.config.namespace)
    try:
        store.init()
        in_redis = (set(store.list_rules()), store.get_policy())
    finally:
        store.close()
    states = {"operator's intended": intended, "database": database, "Redis": in_redis}
    problems = [
        f"{name}: {len(rules)} rules, {policy}"
        for name, (rules, policy) in states.items()
        if (rules, policy) != database
    ]
    detail = f"{len(database[0])} rules, policy {database[1]}"
    shown = f"{'; '.join(problems)} (database: {detail})" if problems else detail
    checks = [Check("rules: operator's final state = database = Redis", not problems, shown)]
    digest = rules_digest(database[0], database[1])
    since = time.time()
    names: dict[str, str] = {}

    def everyone() -> bool:
        names.clear()
        for proc in soak.live("worker") + soak.live("flusher"):
            status = soak.status(proc.name)
            if status.get("time", 0) <= since or status.get("digest") != digest:
                names[proc.name] = f"version {status.get('version')}, {status.get('rules')} rules"
        return not names

    try:
        soak.wait_until(everyone, 15, "every live process holds the database's rules")
        count = len(soak.live("worker")) + len(soak.live("flusher"))
        detail = f"{detail}; {count} processes"
        checks.append(Check("rules: every live process = the database", True, detail))
    except RecoveryTimeoutError as exc:
        shown = ", ".join(f"{name} ({what})" for name, what in sorted(names.items()))
        checks.append(Check("rules: every live process = the database", False, f"{exc}: {shown}"))
    return checks


def finish(soak: Soak) -> Outcome:
    soak.log("final phase: the operator stops; every live process must hold its rules")
    soak.stop([soak.procs["operator"]], timeout=90)
    checks = rules_checks(soak)
    soak.log("the workers close()")
    soak.stop([p for p in soak.procs.values() if p.role == "worker" and p.state == "running"])
    if "wrongdb" in soak.procs and soak.procs["wrongdb"].state == "running":
        soak.stop([soak.procs["wrongdb"]])
    config = soak.config
    checks.append(
        _converge(
            soak,
            "queue gauges back to 0 (G8)",
            lambda: all(row["queued_messages"] == 0 for row in read_redis(soak.reader).values()),
            config.lease_ttl + 30,
        )
    )
    checks.append(
        _converge(
            soak,
            "flushers converge: PostgreSQL = Redis",
            lambda: check_redis_equals_pg(read_redis(soak.reader), read_pg(soak.database_url)).ok,
            3 * config.flush_interval + 30,
        )
    )
    soak.stop(soak.live("flusher"))
    soak.monitor.stop()
    soak.log("checking")
    return Outcome(
        ledgers=read_ledgers(soak.run_dir),
        redis_rows=read_redis(soak.reader),
        pg_rows=read_pg(soak.database_url),
        checks=checks,
        statuses=soak.statuses(),
        operator_log=soak.operator_log(),
        wrong_after={url: dump_database(url) for url in soak.wrong_before},
    )


def _converge(soak: Soak, name: str, done: Any, timeout: float) -> Check:
    started = time.time()
    try:
        soak.wait_until(done, timeout, name)
    except RecoveryTimeoutError as exc:
        return Check(name, False, str(exc))
    return Check(name, True, f"after {time.time() - started:.1f} s")
