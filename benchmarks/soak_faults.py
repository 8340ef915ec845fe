"""The soak's fault schedule: each fault is injected as an operator (or an accident) would,
then the soak waits, with a deadline, for the system to recover, and records how long
each step took (seconds after the fault began).

Every wait has a deadline; a fault whose recovery does not come in time is a failed check,
never a silent pass. After most faults the operator makes a policy change at once
(SIGUSR1) and the soak times how long until every live process holds it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchmarks.soak_checks import counters_equal, read_pg, read_redis
from benchmarks.soak_engines import (
    kill_pubsub_connections,
    restart_all_empty,
    restart_as_replica,
    wait_healthy,
)

if TYPE_CHECKING:
    from benchmarks.soak import Soak

#: How long PostgreSQL stays down in its restart fault.
POSTGRES_DOWNTIME = 3.0
#: The misconfigured process's probes that must each be refused at least once.
WRONG_DB_PROBES = tuple(
    f"{kind}: {probe}"
    for kind in ("postgresql", "sqlite")
    for probe in ("add_rule", "set_policy", "flush_once", "tracker.hydrate")
)


class RecoveryTimeoutError(Exception):
    """A recovery did not come before its deadline."""


@dataclass
class FaultRecord:
    name: str
    title: str = ""
    started: float = 0.0
    ended: float = 0.0
    #: What recovered, in order: label → seconds after `started`.
    recovery: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    killed_worker: str | None = None

    def mark(self, label: str, at: float | None = None) -> None:
        self.recovery[label] = (at if at is not None else time.time()) - self.started


def run_fault(soak: Soak, name: str) -> FaultRecord:
    record = FaultRecord(name)
    try:
        FAULTS[name](soak, record)
    except (RecoveryTimeoutError, AssertionError) as exc:  # AssertionError: a launcher's wait_for
        record.problems.append(str(exc))
    except Exception as exc:
        record.problems.append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    record.ended = time.time()
    return record


def policy_visible(soak: Soak, record: FaultRecord, after: float) -> None:
    """Have the operator change the policy now; time until every live process has it."""
    soak.trigger_operator()
    version, committed = soak.operator_change_after(after)
    at = soak.wait_visible(version, committed)
    record.mark("policy change visible", at)


# -- the faults ------------------------------------------------------------------------------


def pubsub_kill(soak: Soak, record: FaultRecord) -> None:
    record.title = "CLIENT KILL TYPE pubsub on every Redis node"
    record.started = time.time()
    killed = kill_pubsub_connections(soak.sentinels)
    record.notes.append(f"{killed} subscriber connections killed")
    policy_visible(soak, record, record.started)


def worker_kill(soak: Soak, record: FaultRecord) -> None:
    victim = soak.rng.choice(soak.live("worker"))
    record.title, record.started = f"SIGKILL of worker {victim.worker_id}", time.time()

    def mid_interval() -> bool:  # ≥ 0.4 s of events since its last push() (1 s period)
        status = soak.status(victim.name)
        return int(status.get("n", 0)) - int(status.get("acked_n", 0)) >= 4

    soak.wait_until(mid_interval, 10, f"{victim.worker_id} is in the middle of an interval")
    time.sleep(soak.rng.uniform(0.0, 0.1))
    record.started = time.time()
    soak.kill(victim)
    record.killed_worker = victim.worker_id
    replacement = soak.start_worker(victim.slot)
    record.notes.append(f"replaced by {replacement.worker_id}")
    at = soak.wait_until(
        lambda: soak.status(replacement.name).get("last_ack"),
        60,
        f"{replacement.worker_id}'s first acknowledged push",
    )
    record.mark("replacement acknowledged", at)


def wrong_db(soak: Soak, record: FaultRecord) -> None:
    record.title = "a worker started with the wrong database (2nd PostgreSQL db, SQLite file)"
    record.started = time.time()
    soak.start_role("wrongdb", "wrongdb")

    def refusing() -> float:
        status = soak.status("wrongdb")
        answered = status.get("answered", {})
        mismatch = status.get("mismatch", {})
        if all(answered.get(p) for p in WRONG_DB_PROBES) and mismatch and all(mismatch.values()):
            return float(status["time"])
        return 0.0

    at = soak.wait_until(refusing, 60, "both flushers refuse and every probe was answered")
    record.mark("flushers refuse, probes answered", at)
    record.notes.append("the process stays up to the end of the run (through the Redis restart)")
    record.problems += list(soak.status("wrongdb").get("violations", {}))


def leader_kill(soak: Soak, record: FaultRecord) -> None:
    record.title, record.started = "SIGKILL of the flusher leader", time.time()
    leader = soak.wait_until(soak.leader, 30, "a flusher leads")
    record.title = f"SIGKILL of the flusher leader {leader.name}"
    record.started = time.time()
    soak.kill(leader)
    soak.start_flusher()
    ttl = soak.config.lock_ttl
    at, _name = soak.wait_until(
        lambda: soak.leader_time(since=record.started), 3 * ttl + 10, "another flusher leads"
    )
    record.mark("new leader", at)
    record.notes.append(f"lock TTL {ttl:g} s")


def leader_stop(soak: Soak, record: FaultRecord) -> None:
    record.title, record.started = "SIGSTOP of the flusher leader", time.time()
    leader = soak.wait_until(soak.leader, 30, "a flusher leads")
    ttl = soak.config.lock_ttl
    record.title = f"SIGSTOP of the flusher leader {leader.name} past its lock TTL, then SIGCONT"
    record.started = time.time()
    soak.pause(leader)
    try:
        at, _name = soak.wait_until(
            lambda: soak.leader_time(since=record.started, exclude=leader.name),
            3 * ttl + 10,
            "another flusher leads while the leader is stopped",
        )
        record.mark("new leader", at)
        time.sleep(max(0.0, record.started + 2 * ttl + 1 - time.time()))  # well past the TTL
    finally:
        soak.resume(leader)
    resumed = time.time()
    record.notes.append(f"stopped {resumed - record.started:.1f} s; lock TTL {ttl:g} s")

    def stepped_down() -> float:
        status = soak.status(leader.name)
        fresh = status.get("time", 0) > resumed
        return float(status["time"]) if fresh and not status.get("is_leader") else 0.0

    record.mark("resumed one not leader", soak.wait_until(stepped_down, 10, "it steps down"))
    deadline = time.time() + 3.0  # and it stays fenced out: it never claims the lead again
    while time.time() < deadline:
        if soak.status(leader.name).get("is_leader"):
            record.problems.append(f"{leader.name} claims the lead again after SIGCONT")
            break
        time.sleep(0.1)
    if not soak.leader_time(since=resumed):
        record.problems.append("no flusher leads after the old leader resumed")


def sentinel_failover(soak: Soak, record: FaultRecord) -> None:
    sentinels = soak.sentinels
    record.started = time.time()
    old = sentinels.kill_master()
    record.title = f"Sentinel failover: SIGKILL of the master (port {old})"
    new = sentinels.wait_failover(old, timeout=20)
    record.mark("replica promoted")
    restart_as_replica(sentinels, old, new)
    wait_healthy(sentinels, 40)
    record.mark("old master back as replica")
    record.notes.append(f"master {old} → {new}; wait_replicas=2 holds pushes until both replicas")
    record.mark("pushes acknowledged", soak.wait_acked(record.started))
    policy_visible(soak, record, record.started)


def postgres_restart(soak: Soak, record: FaultRecord) -> None:
    record.title = f"PostgreSQL restarted ({POSTGRES_DOWNTIME:g} s down)"
    before = soak.pg_events()
    record.started = time.time()
    soak.postgres.stop("fast")
    try:
        soak.trigger_operator()  # a change attempted while the database is down
        time.sleep(POSTGRES_DOWNTIME)
    finally:
        soak.postgres.start()
    record.mark("database back")
    at = soak.wait_until(
        lambda: time.time() if soak.pg_events() > before else 0.0,
        3 * soak.config.flush_interval + 30,
        "a flush commits after the restart",
    )
    record.mark("first flush", at)
    version, committed = soak.operator_change_after(record.started)
    record.mark("policy change committed", committed)
    record.mark("policy change visible", soak.wait_visible(version, committed))


def redis_restart(soak: Soak, record: FaultRecord) -> None:
    """The controlled drill (see the `benchmarks.soak` docstring): quiesce the workers, wait
    for a flush to catch PostgreSQL up, restart every data node empty, resume."""
    record.title = "Redis restarted empty (all 3 nodes; workers paused until a flush)"
    workers = soak.live("worker")
    record.started = time.time()
    for worker in workers:
        soak.pause(worker)
    try:

        def caught_up() -> float:
            differences = counters_equal(read_redis(soak.reader), read_pg(soak.database_url))
            return 0.0 if differences else time.time()

        deadline = 3 * soak.config.flush_interval + 20
        record.mark("flushed", soak.wait_until(caught_up, deadline, "PostgreSQL catches up"))
        soak.monitor.set_unstable(True)
        restart_all_empty(soak.sentinels)
        wait_healthy(soak.sentinels, 40)
        record.mark("Redis back, empty")
    finally:
        for worker in workers:
            soak.resume(worker)
    resumed = time.time()
    record.notes.append(f"{len(workers)} workers paused {resumed - record.started:.1f} s")
    try:
        record.mark("pushes acknowledged (hydrated)", soak.wait_acked(resumed))
    finally:
        soak.monitor.set_unstable(False)
    policy_visible(soak, record, resumed)


FAULTS: dict[str, Callable[[Soak, FaultRecord], None]] = {
    "pubsub-kill": pubsub_kill,
    "worker-kill": worker_kill,
    "wrong-db": wrong_db,
    "leader-kill": leader_kill,
    "sentinel-failover": sentinel_failover,
    "postgres-restart": postgres_restart,
    "leader-stop": leader_stop,
    "redis-restart": redis_restart,
}
