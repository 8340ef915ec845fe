"""The push protocol (G2, G3, G6, G10, G11): move swapped batches into Redis exactly once.

Each cycle swaps the recorder's batch and adds it to the *pending* deltas of each shard
(deltas never sent may merge with newer ones; `pending.ShardQueues`). A shard's pending
deltas are then sealed into a *chunk* — at most `pending.CHUNK_DOMAINS` domains, so that
one push.lua call stays well under 10 ms — carrying ``(worker_id, seq)`` with ``seq``
strictly increasing per (worker, shard). A sealed chunk's deltas never change: it is
sent, and re-sent until push.lua acknowledges it (applied, or already applied), so a lost
reply can never count twice and a lost request can never lose anything. A shard has at
most one chunk in flight, so a later chunk can never be applied before an earlier one.

Each round sends the head chunk of every shard, one pipeline per node (one on a single
server or Sentinel; on Cluster, each node gets the chunks of the shards whose tag it
owns, all nodes in parallel), on connections of our own, as pre-encoded RESP (redis-py's
pure-Python argument encoding would cost more than Redis's work), and seals the next
chunks while Redis executes. With ``wait_replicas=N`` each node's pipeline ends with
``WAIT N``: its chunks count as acknowledged only when N replicas hold them, else they
stay sealed and go again (the retry is then a duplicate, confirmed by its own WAIT).
Failures back off exponentially (capped) while new events keep accumulating; a MOVED /
ASK answer or a node that stopped answering makes the cluster's slot map reload.

push.lua refuses a shard whose ``hydrated`` marker is missing (Redis lost its data): the
chunk stays sealed until the flusher leader has hydrated the shard (G6; trackers never
hydrate). It also refuses a marker naming another database than the one this worker
first saw (G11): the events stay pending, and the worker says so.

Queue leases ride on the same chunks (G8): a row carries the worker's absolute in-flight
count; when push.lua reports that the worker held no lease on a shard, the next chunk
re-sends every in-flight count of that shard and every other shard where the worker
holds some checks its lease at once; a shard with in-flight messages gets an empty
chunk at least every lease_ttl/3 to keep its lease alive. The same thread releases other
workers' expired leases every 5 s (`leases.reap_expired_leases`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff

from . import scripts
from .batch import Recorder, pending_spellings, take_batch
from .chunk import Chunk, pack_command
from .engine import RedisEngine
from .errors import BackendUnavailableError, ConfigurationError
from .identity import is_identity
from .keys import NamespaceKeys
from .leases import REAP_INTERVAL, reap_expired_leases
from .metrics import (
    PUSH_LATE,
    PUSH_PENDING,
    PUSH_REFUSED,
    PUSH_RETRIES,
    PUSH_SECONDS,
    THREAD_ERRORS,
)
from .pending import ShardQueues

if TYPE_CHECKING:
    from .health.sync import HealthLink

log = logging.getLogger("fedtrack_redis.push")

APPLIED, DUPLICATE, NOT_HYDRATED, MISMATCH, MALFORMED = 1, 2, 0, 3, -1
#: Seconds between two log lines about the same refusal (unhydrated, wrong database).
REPORT_EVERY = 60.0
#: Seconds of lateness at a wake-up worth a warning (or one push interval, if longer).
LATE_WARNING = 0.5


@dataclass
class PushStats:
    """Counters for tests, logs and the benchmark."""

    chunks: int = 0
    duplicates: int = 0
    fields: int = 0
    calls: int = 0
    failures: int = 0
    script_loads: int = 0
    renumbered: int = 0
    refused: int = 0
    unreplicated: int = 0
    late_wakeups: int = 0  # the thread woke up later than LATE_WARNING (or an interval)


class Pusher:
    """Sends a `Recorder`'s batches to Redis; one daemon thread per tracker."""

    def __init__(
        self,
        recorder: Recorder,
        engine: RedisEngine,
        keys: NamespaceKeys,
        worker_id: str,
        *,
        interval: float,
        lease_ttl: float,
        database_id: str | None = None,
        health: HealthLink | None = None,
    ) -> None:
        self._recorder = recorder
        #: Delivery health: the namespace's policy for push.lua, and the view that the
        #: feed of this worker's own chunks updates (None: chunks carry no health data).
        self._health = health
        self._engine = engine
        self._keys = keys
        self._worker = worker_id
        self._interval = interval
        # Every 5 s (G8: an expired lease goes within 15 s); sooner for short leases.
        self._reap_every = min(REAP_INTERVAL, max(0.5, lease_ttl / 2))
        self._script = scripts.register(engine.client, "push")
        self._scripts = scripts.Scripts(engine)
        self._queues = ShardQueues(recorder, keys, worker_id, lease_ttl)
        self._cycle_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = ExponentialBackoff(cap=2.0, base=0.05)
        self._reported: dict[str, float] = {}
        self._noscript_rounds = 0  # rounds answered NOSCRIPT during the current cycle
        self._leases_checked = False  # every leased shard was asked during this cycle
        self._loaded: set[int] = set()  # ids of the node clients that have push.lua
        wait = engine.wait_args()
        self._wait = pack_command(*wait) if wait else b""
        #: The database identity this worker expects every shard to hold (G11): pinned,
        #: or the first one a push acknowledged.
        self.identity: str = database_id or ""
        self.stats = PushStats()

    # -- thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedtrack-pusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a push in progress finishes first). Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        failures = 0
        now = time.monotonic()
        next_push = now + self._interval
        next_reap = now + self._reap_every * 0.5
        while True:
            # While failing, heartbeats wait for the backoff like everything else.
            heartbeat = next_push if failures else self._queues.next_heartbeat()
            wake = min(next_push, next_reap, heartbeat)
            waiting_from = time.monotonic()
            if self._stop.wait(max(0.0, wake - waiting_from)):
                return
            now = time.monotonic()
            # late against the wake-up planned, or the start of the wait if that was past
            self._note_lateness(now - max(wake, waiting_from))
            if now >= next_push or now >= heartbeat:
                try:
                    with self._cycle_lock:
                        ok = self._cycle()
                except ConfigurationError as exc:  # a health policy the namespace refuses
                    self._report("configuration", "push: %s; events stay pending", exc)
                    ok = False
                except Exception:  # a bug: keep everything pending, say so, go on
                    THREAD_ERRORS.labels("pusher").inc()
                    log.exception("push: unexpected error; events stay pending, retrying")
                    ok = False
                failures = 0 if ok else failures + 1
                PUSH_PENDING.set(self._queues.pending_domains())
                delay = self._interval if ok else self._backoff.compute(failures)
                next_push = time.monotonic() + delay
            if now >= next_reap:
                next_reap = now + self._reap_every
                try:
                    reap_expired_leases(self._engine, self._keys, scripts=self._scripts)
                except redis.RedisError as exc:
                    log.debug("lease reaper: Redis unavailable (%s)", exc)
                except Exception:
                    THREAD_ERRORS.labels("lease_reaper").inc()
                    log.exception("lease reaper: unexpected error; retrying")

    # -- public -------------------------------------------------------------------------

    def push(self, timeout: float) -> None:
        """Send everything pending now and wait for its acknowledgement.

        Raises `BackendUnavailableError` when that cannot be done within `timeout`
        seconds; nothing is lost then, the deltas stay pending for the next attempt.
        """
        deadline = time.monotonic() + timeout
        if not self._cycle_lock.acquire(timeout=max(0.0, timeout)):
            raise BackendUnavailableError(f"push: another push did not finish in {timeout}s")
        try:
            failures = 0
            while not self._cycle():
                failures += 1
                delay = self._backoff.compute(failures)
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailableError(
                        f"push: Redis did not acknowledge within {timeout}s;"
                        f" {self.pending_domains()} domains stay pending"
                    )
                time.sleep(delay)
        finally:
            self._cycle_lock.release()

    def pending_domains(self) -> int:
        """Domains not yet acknowledged by Redis (pending, sealed, or in the batch)."""
        return pending_spellings(self._recorder) + self._queues.pending_domains()

    # -- one cycle ------------------------------------------------------------------------

    def _cycle(self) -> bool:
        """Swap, then send rounds until nothing is pending. False on a failure."""
        queues = self._queues
        self._engine.verify_master()
        if self._health is not None:
            queues.health_specs = self._health.specs()
        batch = take_batch(self._recorder)
        queues.absorb_ages(time.time(), batch)  # qshape columns that changed (worker clock)
        if batch is not None:
            queues.absorb(batch)
        queues.plan_heartbeats()
        self._noscript_rounds = 0
        self._leases_checked = False
        while True:
            calls = queues.heads()
            if not calls:
                return True
            if not self._send(calls):
                return False

    # -- the wire -------------------------------------------------------------------------

    def _send(self, calls: list[Chunk]) -> bool:
        """Send one round (the head chunk of each shard), one pipeline per node, and read
        the replies; while Redis works, seal each shard's next chunk. True when every
        chunk was acknowledged."""
        for chunk in calls:
            chunk.attempts += 1
        self.stats.calls += len(calls)
        started = time.perf_counter()
        try:
            groups = self._engine.by_node(calls, lambda chunk: chunk.keys[0])
        except redis.RedisError as exc:  # a cluster with no node for a slot right now
            self._failed(calls, exc)
            self._engine.refresh()
            return False
        sent: list[tuple[Any, Any, list[Chunk]]] = []
        ok = True
        for client, chunks in groups:
            connection = self._send_to(client, chunks)
            if connection is None:
                ok = False
            else:
                sent.append((client, connection, chunks))
        self._queues.seal_ahead(calls)  # encode the next chunks while Redis works
        results: list[tuple[Chunk, object]] = []
        for client, connection, chunks in sent:
            replies = self._read_from(client, connection, chunks)
            if replies is None:
                ok = False
            else:
                results += replies
        PUSH_SECONDS.observe(time.perf_counter() - started)
        return self._handle(results) and ok

    def _send_to(self, client: redis.Redis, chunks: list[Chunk]) -> Any:
        """Write the chunks (and the WAIT) to a connection of `client`'s pool, or None."""
        pool = client.connection_pool
        try:
            if id(client) not in self._loaded:
                self._load_script(client)
            connection = pool.get_connection()
        except (redis.RedisError, OSError) as exc:
            self._failed(chunks, exc)
            self._engine.refresh()
            return None
        sha = self._script.sha
        packed = [chunk.packed(sha, self.identity) for chunk in chunks]
        if self._wait:
            packed.append(self._wait)
        try:
            connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError) as exc:
            connection.disconnect()  # type: ignore[no-untyped-call]
            pool.release(connection)
            self._failed(chunks, exc)
            self._engine.refresh()
            return None
        return connection

    def _read_from(
        self, client: redis.Redis, connection: Any, chunks: list[Chunk]
    ) -> list[tuple[Chunk, object]] | None:
        pool = client.connection_pool
        results: list[tuple[Chunk, object]] = []
        try:
            for chunk in chunks:
                try:
                    results.append((chunk, connection.read_response()))
                except redis.ResponseError as exc:
                    results.append((chunk, exc))
            if self._wait:
                confirmed = connection.read_response()
                if not self._engine.confirmed(confirmed):
                    # Not on enough replicas yet: none of these counts as acknowledged.
                    self.stats.unreplicated += len(chunks)
                    PUSH_REFUSED.labels("unreplicated").inc(len(chunks))
                    self._report(
                        "unreplicated",
                        "push: only %s of %d replicas confirmed; chunks stay pending",
                        confirmed,
                        self._engine.wait_replicas,
                    )
                    return [(chunk, _Unreplicated()) for chunk in chunks]
        except (redis.RedisError, OSError) as exc:
            connection.disconnect()
            self._failed(chunks, exc)
            self._engine.refresh()
            return None
        finally:
            pool.release(connection)
        return results

    def _handle(self, results: list[tuple[Chunk, object]]) -> bool:
        ok = True
        noscript = False
        unhydrated: list[int] = []
        for chunk, result in results:
            if isinstance(result, redis.exceptions.NoScriptError):
                noscript = True
            elif isinstance(result, list) and len(result) >= 5:
                outcome = self._outcome(chunk, result)
                if outcome == NOT_HYDRATED:
                    unhydrated.append(chunk.shard)
                elif outcome is None:
                    ok = False
            else:  # an error reply, a redirect, unreplicated: keep it sealed, retry
                if isinstance(result, scripts.REDIRECTS):
                    self._engine.refresh()
                if not isinstance(result, _Unreplicated):
                    self._failed([chunk], result)
                ok = False
        if not self._leases_checked and (unhydrated or self._queues.reasserting()):
            # Redis lost data or released a lease: every shard where this worker holds
            # in-flight messages checks its lease now (once per cycle).
            self._leases_checked = True
            self._queues.check_all_leases()
        if noscript:
            # SCRIPT FLUSH, a restart, a promoted replica: load it again and resend the
            # chunks unchanged, at once the first time in a cycle, else after the backoff.
            self._loaded.clear()
            self._noscript_rounds += 1
            ok = ok and self._noscript_rounds <= 1
        if unhydrated:
            self.stats.refused += len(unhydrated)
            PUSH_REFUSED.labels("unhydrated").inc(len(unhydrated))
            self._report(
                "unhydrated",
                "push: shards %s are not hydrated; waiting for the flusher leader to"
                " hydrate them (events stay pending)",
                sorted(unhydrated),
            )
            return False
        return ok

    def _outcome(self, chunk: Chunk, result: list[Any]) -> int | None:
        """Act on one push.lua reply: the status when the chunk was acknowledged (or is
        NOT_HYDRATED, left for the caller), None when it stays sealed for a retry."""
        status, lease_absent = int(result[0]), int(result[1])
        fields, ack, marker = int(result[2]), str(result[3]), str(result[4])
        if status == NOT_HYDRATED:
            return status
        if status == MISMATCH:
            self.stats.refused += 1
            PUSH_REFUSED.labels("database_mismatch").inc()
            self._report(
                "mismatch",
                "push: shard %02d holds data of database %s, this worker's is %s;"
                " events stay pending until Redis is rehydrated from the right database",
                chunk.shard,
                marker,
                self.identity,
            )
            return None
        if status == DUPLICATE and ack.isdigit() and int(ack) > chunk.seq:
            # An earlier life of this worker id pushed a higher seq: nothing of ours was
            # applied, so number our chunks above it and send them again.
            self._queues.renumber(chunk.shard, int(ack))
            self.stats.renumbered += 1
            log.warning(
                "push: shard %02d already holds seq %s of worker %s (a restart reusing the"
                " id after a clock step?); renumbered from there",
                chunk.shard,
                ack,
                self._worker,
            )
            return None
        if status not in (APPLIED, DUPLICATE, MALFORMED):
            # Never count what we do not understand as applied: keep it, report it.
            PUSH_REFUSED.labels("unknown_status").inc()
            THREAD_ERRORS.labels("pusher").inc()
            log.error("push.lua answered an unknown status %r; chunk kept", result[0])
            return None
        self._learn(marker)
        self._queues.acknowledged(chunk, status == APPLIED, bool(lease_absent))
        if status == MALFORMED:  # a bug: keeping it would block the shard forever
            PUSH_REFUSED.labels("malformed").inc()
            THREAD_ERRORS.labels("pusher").inc()
            log.error(
                "push.lua refused a malformed chunk (shard %02d, seq %d, %d domains); dropped",
                chunk.shard,
                chunk.seq,
                chunk.domains,
            )
        elif status == DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.chunks += 1
            self.stats.fields += fields
            if len(result) > 5 and result[5] and self._health is not None:
                feed = result[5]
                text = feed.decode() if isinstance(feed, bytes) else str(feed)
                self._health.on_feed(chunk.shard, text)
        return status

    def _learn(self, marker: str) -> None:
        if not self.identity and is_identity(marker):
            self.identity = marker
            log.debug("push: namespace data belongs to database %s", marker)

    def _load_script(self, client: redis.Redis) -> None:
        """Load push.lua into one node (first use, SCRIPT FLUSH, restart, promotion)."""
        self._script.sha = client.script_load(self._script.script)
        self._loaded.add(id(client))
        self.stats.script_loads += 1

    def _note_lateness(self, late: float) -> None:
        """Count and report a wake-up later than G3 allows.

        A starved push thread silently stretches the loss bound of a SIGKILL (G3) and lets
        leases expire (G8); docs/tracker.md says what starves it and what to do.
        """
        if late > max(LATE_WARNING, self._interval):
            self.stats.late_wakeups += 1
            PUSH_LATE.inc(late)
            self._report(
                "late",
                "push thread woke up %.2fs late: this process starves it (a busy thread"
                " making frequent system calls holds the interpreter lock); see"
                " docs/tracker.md, 'Threads'",
                late,
            )

    def _report(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._reported.get(kind, -REPORT_EVERY) >= REPORT_EVERY:
            self._reported[kind] = now
            log.warning(message, *args)

    def _failed(self, calls: list[Chunk], exc: object) -> None:
        self.stats.failures += 1
        PUSH_RETRIES.inc(len(calls))
        attempts = max(chunk.attempts for chunk in calls)
        level = logging.WARNING if attempts in (1, 10) or attempts % 100 == 0 else logging.DEBUG
        log.log(
            level,
            "push of %d chunk(s) not acknowledged (attempt %d: %s: %s); will retry unchanged",
            len(calls),
            attempts,
            type(exc).__name__,
            exc,
        )


class _Unreplicated:
    """Placeholder result: applied on the primary, perhaps, but not confirmed by WAIT."""
