"""Flusher fault scenarios: SIGKILL / SIGSTOP of the leader, PostgreSQL down, Redis emptied.

Each scenario runs on throwaway servers or subprocesses of its own (marked slow).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from fedtrack_redis import hydrate
from fedtrack_redis.errors import BackendUnavailableError
from fedtrack_redis.flusher import Flusher
from fedtrack_redis.keys import NamespaceKeys
from fedtrack_redis.store.schema import COUNTER_COLUMNS
from fedtrack_redis.tracker import FederationTracker
from flusher_helpers import (
    db_stats,
    event_deltas,
    expected_totals,
    leaders,
    make_engine,
    push,
    redis_stats,
    run_python,
    totals,
    wait_for_leader,
)
from servers import PostgresServer, RedisServer, wait_for

pytestmark = pytest.mark.slow

# A flusher in its own process. It appends what happens to <workdir>/events and, when
# <workdir>/freeze exists at the hook point named in argv, stops itself with SIGSTOP.
FLUSHER_PROCESS = """
import logging, os, signal, sys, threading
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
from fedtrack_redis.errors import BackendUnavailableError
from fedtrack_redis.flusher import Flusher
redis_url, database_url, namespace, ttl, interval, freeze_at, workdir = sys.argv[1:8]
flusher = Flusher(
    redis_url, database_url, namespace=namespace, interval=float(interval), lock_ttl=float(ttl)
)
events = open(os.path.join(workdir, "events"), "a", buffering=1)
freeze = os.path.join(workdir, "freeze")

def hook(point):
    if point == freeze_at and os.path.exists(freeze):
        os.remove(freeze)
        events.write("frozen\\n")
        # Thread-directed, so this thread stops before it can take one more step.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)

flusher._hook = hook
original = flusher._flush

def flush():
    try:
        rows = original()
    except Exception as exc:
        events.write(f"failed {type(exc).__name__}\\n")
        raise
    events.write(f"flushed {rows}\\n")
    return rows

flusher._flush = flush
flusher.start()
sys.stdin.read()
flusher.stop()
events.close()
"""


class FlusherProcess:
    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        database_url: str,
        namespace: str,
        *,
        ttl: float,
        interval: float,
        freeze_at: str = "",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.events_path = workdir / "events"
        self.err: str | None = None
        self.process = run_python(
            FLUSHER_PROCESS,
            redis_url,
            database_url,
            namespace,
            str(ttl),
            str(interval),
            freeze_at,
            str(workdir),
        )

    def arm_freeze(self) -> None:
        (self.workdir / "freeze").touch()

    def events(self) -> list[str]:
        if not self.events_path.exists():
            return []
        return self.events_path.read_text().splitlines()

    def stopped(self) -> bool:
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def finish(self) -> str:
        """Let it stop cleanly (SIGCONT, close its stdin) and return its stderr."""
        if self.err is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
            assert self.process.stdin is not None
            if not self.process.stdin.closed:
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            assert self.process.stdout is not None and self.process.stderr is not None
            self.process.stdout.close()
            self.err = self.process.stderr.read()
            self.process.stderr.close()
        return self.err


@pytest.fixture
def flusher_processes(
    tmp_path: Path, redis_url: str, postgres_url: str, namespace: str
) -> Iterator[Callable[..., FlusherProcess]]:
    started: list[FlusherProcess] = []

    def start(**options: Any) -> FlusherProcess:
        process = FlusherProcess(
            tmp_path / f"p{len(started)}",
            options.pop("redis_url", redis_url),
            options.pop("database_url", postgres_url),
            namespace,
            **options,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.finish()


@pytest.fixture
def flushers(redis_url: str, namespace: str) -> Iterator[list[Flusher]]:
    made: list[Flusher] = []
    yield made
    for flusher in made:
        flusher.stop()


def counters(rows: dict[str, Any]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for domain, row in rows.items():
        for name in COUNTER_COLUMNS:
            if name != "queued_messages":
                out[(domain, name)] = row[name]
        for bucket, count in row["histogram"].items():
            out[(domain, f"h{bucket}")] = count
    return out


class Monotonic:
    """Checks that no database row ever goes down, each time it is called."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seen: dict[tuple[str, str], int] = {}
        self.checks = 0
        self.lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self.lock:
            return self._check()

    def _check(self) -> dict[str, Any]:
        rows = db_stats(self.engine)
        now = counters(rows)
        went_down = {k: (v, now.get(k, 0)) for k, v in self.seen.items() if now.get(k, 0) < v}
        assert not went_down, f"rows went backwards: {went_down}"
        self.seen = now
        self.checks += 1
        return rows


def domains_of(client: redis.Redis, keys: NamespaceKeys) -> list[str]:
    return sorted(d for shard in keys.shards for d in client.zrange(shard.active, 0, -1))


def converged(client: redis.Redis, keys: NamespaceKeys, engine: sa.Engine) -> bool:
    return db_stats(engine) == redis_stats(client, keys, domains_of(client, keys))


# -- election under faults ----------------------------------------------------------------------


def test_sigkilled_leader_fails_over_within_the_ttl(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    postgres_url: str,
    flusher_processes: Callable[..., FlusherProcess],
    flushers: list[Flusher],
) -> None:
    ttl = 1.5
    keys = NamespaceKeys(namespace)
    leader = flusher_processes(ttl=ttl, interval=0.1)
    wait_for(lambda: any(e.startswith("flushed") for e in leader.events()), 20, "leader flushes")
    with make_engine(postgres_url) as engine:
        push(redis_client, keys, "w", 1, event_deltas(1, [f"k{i}.example" for i in range(50)]))
        for _ in range(2):
            flushers.append(
                Flusher(
                    redis_url, postgres_url, namespace=namespace, interval=0.1, lock_ttl=ttl
                ).start()
            )
        wait_for(lambda: converged(redis_client, keys, engine), 10, "the subprocess flushes")
        samples = [leaders(flushers) for _ in range(50)]
        assert samples == [0] * 50  # standbys while the subprocess leads

        leader.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.process.wait(10)
        successor = wait_for_leader(flushers, 2 * ttl)
        failover = time.monotonic() - killed
        assert failover <= ttl * 1.1, f"failover took {failover:.3f} s"
        assert leaders(flushers) == 1
        push(redis_client, keys, "w", 2, event_deltas(2, [f"k{i}.example" for i in range(9)]))
        wait_for(lambda: converged(redis_client, keys, engine), 10, "the successor flushes")
        assert successor.is_leader


@pytest.mark.parametrize("freeze_at", ["before_transaction", "after_read", "before_commit"])
def test_paused_leader_cannot_write_after_resuming(
    freeze_at: str,
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    postgres_url: str,
    flusher_processes: Callable[..., FlusherProcess],
    flushers: list[Flusher],
) -> None:
    """SIGSTOP the leader just before its transaction (the fencing token refuses it when
    it resumes), or inside it, after it took the changed domains from Redis or before its
    COMMIT (PostgreSQL's timeouts end the frozen session, so the newer leader is not
    blocked and the late COMMIT fails); after a newer leader wrote newer values, resume
    it: it writes nothing and the rows stay correct."""
    ttl = 1.0
    keys = NamespaceKeys(namespace)
    domains = [f"p{i}.example" for i in range(40)]
    with make_engine(postgres_url) as engine:
        hydrate.hydrate_shards(redis_client, keys, engine)
        monotonic = Monotonic(engine)
        push(redis_client, keys, "w", 1, event_deltas(1, domains))
        old = flusher_processes(ttl=ttl, interval=3600, freeze_at=freeze_at)
        old.arm_freeze()  # its first flush (at acquisition) carries the first batch
        wait_for(old.stopped, 20, "the leader freezes in its flush")
        assert old.events() == ["frozen"]

        new = Flusher(redis_url, postgres_url, namespace=namespace, interval=0.1, lock_ttl=ttl)
        flushers.append(new.start())
        started = time.monotonic()
        wait_for(lambda: new.is_leader and converged(redis_client, keys, engine), 10, "takeover")
        # Lock TTL, then (inside a transaction) at most ttl/2 for PostgreSQL to end the session.
        assert time.monotonic() - started < 2.5 * ttl
        monotonic()
        push(redis_client, keys, "w", 2, event_deltas(2, domains))  # newer values
        wait_for(lambda: converged(redis_client, keys, engine), 10, "the new leader writes")
        newest = monotonic()

        old.process.send_signal(signal.SIGCONT)
        wait_for(lambda: len(old.events()) >= 2, 10, "the old leader's flush ends")
        outcome = old.events()[1]
        # Fenced out (returns 0 rows written) or its session was ended by PostgreSQL.
        allowed = ("flushed 0", "failed OperationalError", "failed InternalError")
        assert outcome in allowed, (outcome, old.finish())
        assert monotonic() == newest  # nothing written by the old leader
        wait_for(lambda: converged(redis_client, keys, engine), 10, "still converged")
        assert new.is_leader
        err = old.finish()
        assert old.process.returncode == 0, err
        assert "Traceback" not in err, err
        if freeze_at == "before_transaction":
            assert outcome == "flushed 0"
            assert "is no longer the newest" in err, err
        monotonic()


# -- PostgreSQL down during a flush -------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer().init().start()
    yield server
    server.close()


def test_postgres_down_during_a_flush(
    pg_server: PostgresServer,
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    flushers: list[Flusher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fedtrack_redis.flusher")
    keys = NamespaceKeys(namespace)
    url = pg_server.url()
    flusher = Flusher(redis_url, url, namespace=namespace, interval=0.1, lock_ttl=2.0)
    flushers.append(flusher)
    armed = {"stop": False}

    def hook(point: str) -> None:
        if point == "after_read" and armed["stop"]:
            armed["stop"] = False
            # PostgreSQL goes down in the middle of this flush. (A clean stop: the throwaway
            # server runs with synchronous_commit=off, so a crash would lose commits.)
            pg_server.stop()

    flusher._hook = hook
    batches = [event_deltas(n, [f"g{i}.example" for i in range(n, n + 30)]) for n in range(4)]
    with make_engine(url) as engine:
        flusher.start()
        wait_for(lambda: flusher.is_leader, 20, "leader")
        wait_for(lambda: not hydrate.missing_shards(redis_client, keys), 10, "the leader hydrates")
        assert set(push(redis_client, keys, "w", 1, batches[0]).values()) == {1}
        wait_for(lambda: converged(redis_client, keys, engine), 10, "first flush")
        monotonic = Monotonic(engine)
        monotonic()

        armed["stop"] = True
        push(redis_client, keys, "w", 2, batches[1])
        wait_for(lambda: "database unavailable" in caplog.text, 20, "the failed flush is logged")
        push(redis_client, keys, "w", 3, batches[2])
        wait_for(lambda: caplog.text.count("database unavailable") >= 3, 20, "retries")
        assert flusher._thread is not None and flusher._thread.is_alive()

        pg_server.start()
        push(redis_client, keys, "w", 4, batches[3])
        wait_for(lambda: converged(redis_client, keys, engine), 30, "rows converge when PG is back")
        rows = monotonic()
        expected = expected_totals(batches)
        assert {name: totals(rows).get(name, 0) for name in expected} == expected
        assert "Traceback" not in caplog.text


# -- Redis comes back empty -------------------------------------------------------------------

HYDRATE_PROCESS = """
import json, sys
import redis
from fedtrack_redis.connections import database_engine
from fedtrack_redis.hydrate import hydrate_shards
from fedtrack_redis.keys import NamespaceKeys
client = redis.Redis.from_url(sys.argv[1], decode_responses=True)
engine = database_engine(sys.argv[2])
sys.stdin.readline()
print(json.dumps(hydrate_shards(client, NamespaceKeys(sys.argv[3]), engine)), flush=True)
client.close()
engine.dispose()
"""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


def test_redis_restart_restores_totals_exactly_once(
    redis_server: RedisServer, postgres_url: str, namespace: str
) -> None:
    keys = NamespaceKeys(namespace)
    url = redis_server.url
    domains = [f"h{i}.example" for i in range(400)]
    recorded: list[dict[str, dict[str, int]]] = []
    client = redis.Redis.from_url(url, decode_responses=True)
    with make_engine(postgres_url) as engine:
        flusher = Flusher(url, postgres_url, namespace=namespace, lock_ttl=2.0)
        try:
            monotonic = Monotonic(engine)
            assert flusher.flush_once() == 0  # hydrates the empty namespace
            for seq in range(1, 4):
                batch = event_deltas(seq, domains[seq * 50 : seq * 50 + 200])
                assert set(push(client, keys, "w1", seq, batch).values()) == {1}
                recorded.append(batch)
            # w2's chunk seq 7 is applied and flushed, but its acknowledgement is "lost".
            lost_ack = event_deltas(7, domains[:120])
            assert set(push(client, keys, "w2", 7, lost_ack).values()) == {1}
            recorded.append(lost_ack)
            assert flusher.flush_once() > 0
            before = monotonic()

            redis_server.restart()  # comes back empty

            # Pushes before hydration are refused (the worker keeps them) ...
            early = event_deltas(20, domains[100:300])
            assert set(push(client, keys, "w1", 4, early).values()) == {-1}
            # ... hydrate from three processes and this one at once, then once more.
            workers = [run_python(HYDRATE_PROCESS, url, postgres_url, namespace) for _ in range(3)]
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            restored = [hydrate.hydrate_shards(client, keys, engine)]
            for worker in workers:
                out, err = worker.communicate(timeout=60)
                assert worker.returncode == 0, err
                restored.append(json.loads(out))
            restored.append(hydrate.hydrate_shards(client, keys, engine))
            assert sum(restored) == len(before)
            assert counters(redis_stats(client, keys, domains)) == counters(before)

            # ... then the refused chunk is retried, unchanged, and applied once.
            assert set(push(client, keys, "w1", 4, early).values()) == {1}
            recorded.append(early)
            # The lost-ack chunk retried after loss + hydrate: the restored ack stops it.
            assert set(push(client, keys, "w2", 7, lost_ack).values()) == {0}

            assert flusher.flush_once() > 0  # re-acquires (the lock went with Redis)
            rows = monotonic()
            assert rows == redis_stats(client, keys, domains)
            expected = expected_totals(recorded)
            assert {name: totals(rows).get(name, 0) for name in expected} == expected
            assert flusher.flush_once() == 0
        finally:
            flusher.stop()
            client.close()


def test_running_flushers_hydrate_a_restarted_redis(
    redis_server: RedisServer, postgres_url: str, namespace: str
) -> None:
    """Flushers notice the empty Redis by themselves; a worker retrying refused pushes
    gets them applied once hydrated; no row ever goes down (checked after every flush)."""
    keys = NamespaceKeys(namespace)
    url = redis_server.url
    domains = [f"a{i}.example" for i in range(300)]
    client = redis.Redis.from_url(url, decode_responses=True)
    with make_engine(postgres_url) as engine:
        monotonic = Monotonic(engine)
        violations: list[BaseException] = []
        running = [
            Flusher(url, postgres_url, namespace=namespace, interval=0.1, lock_ttl=1.0)
            for _ in range(2)
        ]

        def checked(flusher: Flusher) -> None:
            original = flusher._flush

            def flush() -> int:
                rows = original()
                try:
                    monotonic()
                except AssertionError as exc:
                    violations.append(exc)
                return rows

            flusher._flush = flush  # type: ignore[method-assign]

        try:
            for flusher in running:
                checked(flusher)
                flusher.start()
            wait_for(lambda: not hydrate.missing_shards(client, keys), 10, "initial hydration")
            recorded = []
            seq = 1

            def push_until_applied(batch: dict[str, dict[str, int]]) -> None:
                nonlocal seq
                wait_for(
                    lambda: set(push(client, keys, "w", seq, batch).values()) <= {0, 1},
                    20,
                    "the push is accepted",
                    interval=0.05,
                )
                recorded.append(batch)
                seq += 1

            for n in range(3):
                push_until_applied(event_deltas(n, domains[n * 40 : n * 40 + 150]))
            wait_for(lambda: converged(client, keys, engine), 10, "flushed")
            for _round in range(2):
                redis_server.restart()
                push_until_applied(event_deltas(10 + _round, domains[100:250]))
                wait_for(lambda: converged(client, keys, engine), 20, "converged after restart")
            rows = monotonic()
            expected = expected_totals(recorded)
            assert {name: totals(rows).get(name, 0) for name in expected} == expected
            assert not violations, violations
            assert monotonic.checks > 3
            assert leaders(running) == 1
        finally:
            for flusher in running:
                flusher.stop()
            client.close()


def test_tracker_events_survive_a_redis_restart(
    redis_server: RedisServer, postgres_url: str, namespace: str
) -> None:
    """A real tracker (no database: it cannot hydrate) keeps its refused pushes until a
    running flusher hydrated the empty Redis; totals end exact in Redis and PostgreSQL."""
    keys = NamespaceKeys(namespace)
    url = redis_server.url
    client = redis.Redis.from_url(url, decode_responses=True)
    tracker = FederationTracker(url, namespace=namespace, push_interval=0.05)
    flusher = Flusher(url, postgres_url, namespace=namespace, interval=0.1, lock_ttl=1.0)
    with make_engine(postgres_url) as engine:
        monotonic = Monotonic(engine)
        original = flusher._flush

        def flush() -> int:
            rows = original()
            monotonic()
            return rows

        flusher._flush = flush  # type: ignore[method-assign]
        try:
            flusher.start()
            expected = {name: 0 for name in COUNTER_COLUMNS}

            def record(round_: int) -> None:
                for i in range(400):
                    domain = f"t{(i * 3 + round_) % 90}.example"
                    if i % 3:
                        tracker.record_success(domain, i % 700, "HTTPS")
                        expected["success_https"] += 1
                        expected["successful_deliveries"] += 1
                        expected["total_latency_ms"] += i % 700
                    else:
                        tracker.record_failure(domain, "SMTP")
                        expected["failed_smtp"] += 1

            for round_ in range(3):
                if round_ == 0:
                    record(round_)
                else:
                    with flusher._flush_lock:  # hold the flusher back for a moment
                        redis_server.restart()  # empty
                        record(round_)
                        with pytest.raises(BackendUnavailableError):
                            tracker.push(timeout=0.3)  # refused: not hydrated
                        assert hydrate.missing_shards(client, keys)
                tracker.push(timeout=20)  # the flusher hydrates; the same chunks apply
                wait_for(lambda: converged(client, keys, engine), 20, "converged")
            rows = monotonic()
            summed = totals(rows)
            assert {name: summed[name] for name in expected} == expected
            assert tracker.push_stats.refused >= 1  # refused, kept, then applied
        finally:
            tracker.close()
            flusher.stop()
            client.close()
