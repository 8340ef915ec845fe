"""Soak with faults (docs/safety.md): ``python -m benchmarks.soak --minutes N``.

Runs, on a throwaway Redis Sentinel set (1 master, 2 replicas, 3 sentinels; the URL
carries ``wait_replicas=2``, every replica, so a failover loses nothing acknowledged,
G10) and a throwaway PostgreSQL:

* ``--workers`` worker processes (a `FederationTracker`, a `PolicyStore` and
  `check_federation_policy` on the hot path), each recording a seeded mix over a few
  hundred domains and keeping a ledger of what it recorded and what Redis acknowledged
  (`benchmarks.soak_ledger`);
* two flusher processes (`Flusher`, one leads by election), and an operator process
  changing rules and the policy, logging the state it intends;
* a fault schedule spread over the run (`benchmarks.soak_faults`): pub/sub connections
  killed, SIGKILL of a worker (replaced under a new worker id), a worker started with
  the wrong database (a second PostgreSQL database and a SQLite file; it stays up to the
  end), SIGKILL of the flusher leader, a Sentinel failover, PostgreSQL restarted, SIGSTOP
  of the leader past its lock TTL then SIGCONT, Redis restarted empty. Runs of 8 minutes
  or more repeat the schedule (the wrong database once); ``--skip FAULT`` leaves one out.

**Redis restarted empty** is run as an operator's controlled drill. With no persistence,
what Redis acknowledged after the last flush is lost on a restart: that is inherent, not
a bug, so the drill first SIGSTOPs every worker, waits until a flush has caught
PostgreSQL up with Redis, restarts *all* data nodes empty, then SIGCONTs the workers.
Their pushes are refused (the shards are not hydrated) and retried unchanged until the
flusher leader has hydrated Redis from PostgreSQL, so nothing acknowledged is lost and,
thanks to the acknowledgements persisted beside the totals, nothing counts twice: the
final checks hold exactly. What the workers recorded meanwhile stays pending in them.
(There is no exact drill without the quiesce: an event Redis acknowledged after the last
flush exists nowhere else once every node restarted empty.)

At the end the workers close, the flushers converge, and the soak checks: Redis =
PostgreSQL field for field = the sum of the ledgers' acknowledged totals (exactly for
workers that closed; between acknowledged and recorded for SIGKILLed ones, whose bound
is named), what the SIGKILLed workers lost is at most what they recorded in their last
push interval (G3), PostgreSQL and Redis never went backwards nor ahead of what was
recorded at any sample, every live process's rules = the database's = the operator's, the wrong
database refused everything and was not written to, no library thread died or met an
unexpected error. It prints a table of what each fault cost, writes it as Markdown
(``--output``), and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks import soak_report
from benchmarks.soak_checks import Monitor, libpq
from benchmarks.soak_engines import (
    PostgresServer,
    RedisSentinelSet,
    create_database,
    sentinel_url,
)
from benchmarks.soak_faults import FAULTS, FaultRecord, RecoveryTimeoutError, run_fault
from benchmarks.soak_ledger import population
from benchmarks.soak_process import Config
from benchmarks.soak_setup import seed_wrong_database
from fedtrack_redis import PolicyStore, StatsReader

if TYPE_CHECKING:
    from benchmarks.soak_final import Outcome

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "soak"
SCHEDULE = list(FAULTS)


@dataclass
class Proc:
    name: str
    role: str
    popen: subprocess.Popen[bytes]
    started_at: float
    slot: int = -1
    worker_id: str = ""
    state: str = "running"  # running | paused | killed | stopped | died
    exit_code: int | None = None


class Soak:
    """The coordinator: owns the servers and the processes, runs the schedule."""

    def __init__(self, options: argparse.Namespace, run_dir: Path) -> None:
        self.options = options
        self.run_dir = run_dir
        self.rng = random.Random(options.seed)
        self.procs: dict[str, Proc] = {}
        self.generations: dict[int, int] = {}
        self.flushers_started = 0
        self.faults: list[FaultRecord] = []
        self.unexpected: list[str] = []
        self.t0 = time.time()
        self.postgres = PostgresServer()
        self.sentinels = RedisSentinelSet()

    # -- set-up ---------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.1f} s] {message}", flush=True)

    def setup(self) -> None:
        self.postgres.init().start()
        self.database_url = create_database(self.postgres, "fedtrack_soak")
        wrong_pg_url = create_database(self.postgres, "fedtrack_staging")
        sqlite_url = f"sqlite:///{self.run_dir / 'wrong.sqlite3'}"
        self.sentinels.start()
        redis_url = sentinel_url(self.sentinels, wait_replicas=2)
        options = self.options
        self.config = Config(
            run_dir=str(self.run_dir),
            redis_url=redis_url,
            database_url=self.database_url,
            wrong_pg_url=wrong_pg_url,
            sqlite_url=sqlite_url,
            namespace=NAMESPACE,
            seed=options.seed,
            domains=options.domains,
            events_per_tick=options.events,
            tick=0.1,
            interval=1.0,
            push_interval=0.5,
            push_timeout=1.0,
            lease_ttl=10.0,
            flush_interval=2.0,
            lock_ttl=4.0,
            op_interval=1.0,
        )
        self.config_path = self.run_dir / "config.json"
        self.config.save(self.config_path)
        # The schema is created once, as `fedtrack db upgrade` would; workers only check it.
        PolicyStore(self.database_url, redis_url, namespace=NAMESPACE).init(migrate=True).close()
        names = [spellings[0] for spellings in population(options.domains)]
        self.wrong_before = {
            url: seed_wrong_database(url, redis_url, self.sentinels, names)
            for url in (wrong_pg_url, sqlite_url)
        }
        self.reader = StatsReader(redis_url, namespace=NAMESPACE)
        self.monitor = Monitor(self.database_url, self.reader, self.statuses)
        self.log(
            f"servers up: Sentinel set {self.sentinels.url} (wait_replicas=2),"
            f" PostgreSQL on port {self.postgres.port}; run directory {self.run_dir}"
        )
        for _ in range(2):
            self.start_flusher()
        self.wait_until(self.leader, 60, "a flusher leads (and hydrates the namespace)")
        self.start_role("operator", "operator", seed=options.seed)
        for slot in range(options.workers):
            self.start_worker(slot)
        self.wait_acked(0.0, timeout=90)
        self.monitor.start()
        self.log(f"{options.workers} workers, 2 flushers and the operator are running")

    # -- processes ------------------------------------------------------------------------------

    def start_role(self, role: str, name: str, **extra: Any) -> Proc:
        command = [sys.executable, "-m", "benchmarks.soak_roles", role]
        command += ["--config", str(self.config_path), "--name", name]
        if "worker_id" in extra:
            command += ["--worker-id", extra["worker_id"]]
        if "seed" in extra:
            command += ["--seed", str(extra["seed"])]
        with open(self.run_dir / f"log-{name}.txt", "ab") as log:
            popen = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
        proc = Proc(
            name, role, popen, time.time(), extra.get("slot", -1), extra.get("worker_id", "")
        )
        self.procs[name] = proc
        return proc

    def start_worker(self, slot: int) -> Proc:
        generation = self.generations.get(slot, -1) + 1
        self.generations[slot] = generation
        worker_id = f"soak-w{slot}-g{generation}"
        seed = self.options.seed * 1_000_003 + slot * 101 + generation
        return self.start_role("worker", worker_id, worker_id=worker_id, seed=seed, slot=slot)

    def start_flusher(self) -> Proc:
        self.flushers_started += 1
        return self.start_role("flusher", f"flusher-{self.flushers_started}")

    def kill(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(10)
        proc.state, proc.exit_code = "killed", proc.popen.returncode

    def pause(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGSTOP)
        proc.state = "paused"

    def resume(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGCONT)
        proc.state = "running"

    def stop(self, procs: list[Proc], timeout: float = 60.0) -> None:
        """SIGTERM, then wait for a clean exit (they close the library objects)."""
        for proc in procs:
            proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.exit_code = proc.popen.wait(timeout)
                proc.state = "stopped"
            except subprocess.TimeoutExpired:
                self.unexpected.append(f"{proc.name} did not stop within {timeout:g} s")
                self.kill(proc)

    def live(self, role: str) -> list[Proc]:
        self.check_processes()
        return [p for p in self.procs.values() if p.role == role and p.state == "running"]

    def check_processes(self) -> None:
        for proc in self.procs.values():
            if proc.state in ("running", "paused") and proc.popen.poll() is not None:
                proc.state, proc.exit_code = "died", proc.popen.returncode
                self.unexpected.append(f"{proc.name} exited by itself (code {proc.exit_code})")

    # -- what the processes say -----------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.run_dir / f"status-{name}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {name: self.status(name) for name in list(self.procs)}

    def leader(self) -> Proc | None:
        found = self.leader_time(since=time.time() - 1.0)
        return self.procs[found[1]] if found else None

    def leader_time(self, since: float, exclude: str = "") -> tuple[float, str] | None:
        """(status time, name) of a running flusher that says it leads in a status written
        after `since`."""
        for proc in self.live("flusher"):
            status = self.status(proc.name)
            if proc.name != exclude and status.get("is_leader") and status["time"] > since:
                return float(status["time"]), proc.name
        return None

    def wait_acked(self, after: float, timeout: float = 60.0) -> float:
        """Wait until every running worker had a push acknowledged after `after`; returns
        the latest of those acknowledgements."""

        def acked() -> float:
            times = [self.status(p.name).get("last_ack", 0.0) for p in self.live("worker")]
            return max(times) if times and min(times) > after else 0.0

        return self.wait_until(acked, timeout, "every worker's pushes are acknowledged")

    def trigger_operator(self) -> None:
        self.procs["operator"].popen.send_signal(signal.SIGUSR1)

    def operator_change_after(self, after: float, timeout: float = 90.0) -> tuple[int, float]:
        """(version, commit time) of the operator's first change started after `after`."""

        def change() -> tuple[int, float] | None:
            for line in reversed(self.operator_log()):
                if line["t"] == "op" and line["started"] >= after and line["done"]:
                    return int(line["version"]), float(line["time"])
            return None

        return self.wait_until(change, timeout, "the operator commits a change")

    def operator_log(self) -> list[dict[str, Any]]:
        path = self.run_dir / "operator.jsonl"
        lines = []
        for raw in path.read_text().splitlines() if path.exists() else []:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def wait_visible(self, version: int, committed: float, timeout: float = 30.0) -> float:
        """Wait until every running worker and flusher holds policy `version`; returns when
        the last of them applied it (its store listener's clock)."""

        def applied_at(status: dict[str, Any]) -> float | None:
            times = [at for v, at in status.get("applied", []) if v >= version]
            if times:
                return float(min(times))
            return float(status["time"]) if status.get("version", -1) >= version else None

        def visible() -> float:
            times = []
            for proc in self.live("worker") + self.live("flusher"):
                at = applied_at(self.status(proc.name))
                if at is None:
                    return 0.0
                times.append(at)
            return max([committed, *times])

        return self.wait_until(visible, timeout, f"every process holds policy version {version}")

    def pg_events(self) -> int:
        """The sum of every counter in PostgreSQL now (0 while it does not answer)."""
        import psycopg

        try:
            with psycopg.connect(libpq(self.database_url), autocommit=True) as connection:
                row = connection.execute(
                    "SELECT COALESCE(SUM(successful_deliveries + failed_http + failed_https"
                    " + failed_smtp), 0) FROM federation_server_stats"
                ).fetchone()
        except psycopg.Error:
            return 0
        return int(row[0]) if row else 0

    @staticmethod
    def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll `predicate` (every 50 ms) until it returns something truthy; that value, or
        `RecoveryTimeoutError` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RecoveryTimeoutError(f"timed out after {timeout:g} s waiting until {what}")
            time.sleep(0.05)

    # -- the run ----------------------------------------------------------------------------------

    def schedule(self) -> list[str]:
        faults = [name for name in SCHEDULE if name not in self.options.skip]
        rounds = max(1, int(self.options.minutes // 4))
        again = [name for name in faults if name != "wrong-db"]
        return faults + again * (rounds - 1)

    def run(self) -> None:
        faults = self.schedule()
        start = time.time()
        duration = self.options.minutes * 60
        slot = duration / (len(faults) + 1)
        for index, name in enumerate(faults):
            jitter = self.rng.uniform(0.0, 1.0)  # not in step with the workers' pushes
            time.sleep(max(0.0, start + (index + 1) * slot + jitter - time.time()))
            self.log(f"fault {index + 1}/{len(faults)}: {name}")
            record = run_fault(self, name)
            self.faults.append(record)
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in record.recovery.items())
            self.log(f"  {record.title}: {steps or 'no recovery recorded'}")
            for problem in record.problems:
                self.log(f"  PROBLEM: {problem}")
        time.sleep(max(5.0, start + duration - time.time()))

    def finish(self) -> Outcome:
        """Stop the load, let everything converge, gather what the checks need."""
        from benchmarks.soak_final import finish

        return finish(self)

    def teardown(self) -> None:
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                with contextlib.suppress(OSError):
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(10)
        with contextlib.suppress(Exception):
            self.monitor.stop()
        with contextlib.suppress(Exception):
            self.reader.close()
        self.sentinels.close()
        self.postgres.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak with faults: workers, flushers and an operator on a throwaway Redis"
        " Sentinel set and PostgreSQL, a fault schedule, then exact checks against the"
        " workers' ledgers and a table of what each fault cost. Exit status 1 when a check"
        " fails.",
    )
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the faulty load")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--domains", type=int, default=300, help="remote domains (300)")
    parser.add_argument("--events", type=int, default=30, help="events per worker tick (0.1 s)")
    parser.add_argument("--seed", type=int, default=1, help="seeds traffic, operator, faults")
    parser.add_argument(
        "--skip", action="append", default=[], choices=SCHEDULE, help="leave a fault out"
    )
    parser.add_argument("--output", type=Path, help="write the Markdown report there")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (ledgers, logs) on success"
    )
    options = parser.parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)  # tear the servers down on SIGTERM too
    # The set-up's own library calls (seeding) warn about the empty namespaces they create.
    logging.getLogger("fedtrack_redis").setLevel(logging.ERROR)
    run_dir = Path(tempfile.mkdtemp(prefix="fedtrack-soak-"))
    soak = Soak(options, run_dir)
    ok = False
    try:
        soak.setup()
        soak.run()
        outcome = soak.finish()
        ok = soak_report.publish(soak, outcome, options.output)
    finally:
        soak.teardown()
        if ok and not options.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"run directory kept: {run_dir}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
