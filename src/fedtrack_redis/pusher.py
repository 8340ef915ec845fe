"""The push protocol (G2, G3, G6): move swapped batches into Redis exactly once.

Each cycle swaps the recorder's batch and adds it to the *pending* deltas of each shard
(deltas never sent may merge with newer ones; `pending.ShardQueues`). A shard's pending
deltas are then sealed into a *chunk* — at most `pending.CHUNK_DOMAINS` domains, so that
one push.lua call stays well under 10 ms — carrying ``(worker_id, seq)`` with ``seq``
strictly increasing per (worker, shard). A sealed chunk is immutable: it is sent, and
re-sent byte for byte until push.lua acknowledges it (applied, or already applied), so
a lost reply can never count twice and a lost request can never lose anything. A shard
has at most one chunk in flight, so a later chunk can never be applied before an earlier
one (which would make the earlier look like a duplicate). Each round sends the head
chunk of every shard in one pipeline, on a connection of our own, as pre-encoded RESP
(redis-py's pure-Python argument encoding would cost more than Redis's work), and seals
the next chunks while Redis executes. Failures back off exponentially (capped) while new
events keep accumulating.

push.lua refuses a shard whose ``hydrated`` marker is missing (Redis lost its data): the
chunk stays sealed and the pusher hydrates the shard from the database when it has one,
else waits for any other process to do it (G6).

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
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff

from . import scripts
from .batch import Recorder
from .chunk import Chunk
from .errors import BackendUnavailableError
from .keys import NamespaceKeys
from .leases import REAP_INTERVAL, reap_expired_leases
from .metrics import PUSH_RETRIES, PUSH_SECONDS
from .pending import ShardQueues

log = logging.getLogger("fedtrack_redis.push")

APPLIED, DUPLICATE, NOT_HYDRATED, MALFORMED = 1, 2, 0, -1


@dataclass
class PushStats:
    """Counters for tests, logs and the benchmark."""

    chunks: int = 0
    duplicates: int = 0
    fields: int = 0
    calls: int = 0
    failures: int = 0
    hydrations: int = 0
    script_loads: int = 0


class Pusher:
    """Sends a `Recorder`'s batches to Redis; one daemon thread per tracker."""

    def __init__(
        self,
        recorder: Recorder,
        client: redis.Redis,
        keys: NamespaceKeys,
        worker_id: str,
        *,
        interval: float,
        lease_ttl: float,
        hydrate: Callable[[list[int]], object] | None = None,
    ) -> None:
        self._recorder = recorder
        self._client = client
        self._keys = keys
        self._worker = worker_id
        self._interval = interval
        # Every 5 s (§2.1: an expired lease goes within 15 s); sooner for short leases.
        self._reap_every = min(REAP_INTERVAL, max(0.5, lease_ttl / 2))
        self._hydrate = hydrate
        self._script = scripts.register(client, "push")
        self._queues = ShardQueues(recorder, keys, worker_id, lease_ttl)
        self._cycle_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = ExponentialBackoff(cap=2.0, base=0.05)
        self._unhydrated_logged = False
        self._hydrated_now: set[int] = set()  # shards hydrated during the current cycle
        self._noscript_rounds = 0  # rounds answered NOSCRIPT during the current cycle
        self._leases_checked = False  # every leased shard was asked during this cycle
        self._script_loaded = False
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
            if self._stop.wait(max(0.0, wake - time.monotonic())):
                return
            now = time.monotonic()
            if now >= next_push or now >= heartbeat:
                with self._cycle_lock:
                    ok = self._cycle()
                failures = 0 if ok else failures + 1
                delay = self._interval if ok else self._backoff.compute(failures)
                next_push = time.monotonic() + delay
            if now >= next_reap:
                next_reap = now + self._reap_every
                try:
                    reap_expired_leases(self._client, self._keys)
                except redis.RedisError as exc:
                    log.debug("lease reaper: Redis unavailable (%s)", exc)
                except Exception:
                    log.exception("lease reaper failed")

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
        return self._recorder.pending_domains() + self._queues.pending_domains()

    # -- one cycle ------------------------------------------------------------------------

    def _cycle(self) -> bool:
        """Swap, then send rounds until nothing is pending. False on a failure."""
        queues = self._queues
        batch = self._recorder.swap()
        if batch is not None:
            queues.absorb(batch)
        queues.plan_heartbeats()
        self._hydrated_now.clear()
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
        """Send one round (the head chunk of each shard) in one pipeline and read the
        replies; while Redis works, seal each shard's next chunk. True when every chunk
        was acknowledged.
        """
        for chunk in calls:
            chunk.attempts += 1
        self.stats.calls += len(calls)
        pool = self._client.connection_pool
        results: list[object] = []
        try:
            if not self._script_loaded:
                self._load_script()
            connection = pool.get_connection()
        except (redis.RedisError, OSError) as exc:
            self._failed(calls, exc)
            return False
        sha = self._script.sha
        started = time.perf_counter()
        try:
            connection.send_packed_command(  # type: ignore[no-untyped-call]
                [chunk.packed(sha) for chunk in calls]
            )
            self._queues.seal_ahead(calls)  # encode the next chunks while Redis works
            for _chunk in calls:
                try:
                    results.append(connection.read_response())
                except redis.ResponseError as exc:
                    results.append(exc)
        except (redis.RedisError, OSError) as exc:
            connection.disconnect()  # type: ignore[no-untyped-call]
            self._failed(calls, exc)
            return False
        finally:
            pool.release(connection)
        PUSH_SECONDS.observe(time.perf_counter() - started)
        return self._handle(calls, results)

    def _handle(self, calls: list[Chunk], results: list[object]) -> bool:
        ok = True
        noscript = False
        unhydrated: list[int] = []
        for chunk, result in zip(calls, results, strict=True):
            if isinstance(result, redis.exceptions.NoScriptError):
                noscript = True
                continue
            if isinstance(result, Exception) or not isinstance(result, list):
                self._failed([chunk], result)
                ok = False
                continue
            status, lease_absent, fields = (int(value) for value in result)
            if status == NOT_HYDRATED:
                unhydrated.append(chunk.shard)
                continue
            self._queues.acknowledged(chunk, status == APPLIED, bool(lease_absent))
            if status == MALFORMED:  # a bug: keeping it would block the shard forever
                log.error("push.lua refused a malformed chunk of shard %d; dropped", chunk.shard)
            elif status == DUPLICATE:
                self.stats.duplicates += 1
            else:
                self.stats.chunks += 1
                self.stats.fields += fields
        if not self._leases_checked and (unhydrated or self._queues.reasserting()):
            # Redis lost data or released a lease: every shard where this worker holds
            # in-flight messages checks its lease now (once per cycle).
            self._leases_checked = True
            self._queues.check_all_leases()
        if noscript:
            # SCRIPT FLUSH or a restart: load it again and resend the chunks unchanged,
            # at once the first time in a cycle, else after the backoff.
            self._script_loaded = False
            self._noscript_rounds += 1
            ok = ok and self._noscript_rounds <= 1
        if unhydrated:
            return self._hydrate_shards(unhydrated) and ok
        if ok:
            self._unhydrated_logged = False
        return ok

    def _load_script(self) -> None:
        """Load push.lua into Redis (first use, after SCRIPT FLUSH or a restart)."""
        self._script.sha = self._client.script_load(self._script.script)
        self._script_loaded = True
        self.stats.script_loads += 1

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

    def _hydrate_shards(self, shards: list[int]) -> bool:
        """Hydrate refused shards from the database (when we have one). True if done."""
        if self._hydrated_now.issuperset(shards):
            return False  # hydrated in this cycle and still refused: back off
        if self._hydrate is None:
            if not self._unhydrated_logged:
                log.warning(
                    "shards %s are not hydrated: waiting for a process with the database"
                    " (a tracker or flusher given `database=`) to hydrate them",
                    shards,
                )
                self._unhydrated_logged = True
            return False
        self._hydrated_now.update(shards)
        try:
            self._hydrate(shards)
        except Exception as exc:
            log.warning(
                "hydrating shards %s failed (%s: %s); will retry", shards, type(exc).__name__, exc
            )
            return False
        self.stats.hydrations += 1
        return True
