"""`FederationTracker`: per-domain delivery diagnostics shared by a cluster of workers.

The tracker is three parts with one job each: the `Recorder` it extends (the hot path,
process memory only, G1), a `Pusher` thread (the exactly-once push protocol, G2/G3/G6/G8)
and the reads below, which always ask Redis so every worker sees the cluster's totals.
A tracker never touches the database on its own: shards that Redis lost are hydrated by
the flusher leader (one hydrator for the cluster), and until then pushes wait (G6).
Delivery health (docs/health.md, G12) rides on the same pushes: `should_attempt` reads a
`HealthView` that a `HealthSync` thread keeps current and that the pusher updates with
the changes its own chunks made.

Life cycle: the constructor starts the push thread (no other I/O); `close()` stops it,
releases this worker's queue leases and pushes what is left. It also runs at interpreter
exit, and on SIGTERM when the application left SIGTERM to its default: while a tracker
lives, the handler closes every live tracker on a helper thread, then lets the default
action terminate the process (once the last tracker is closed the default comes back).
An application with its own SIGTERM handler calls `close()` from it. In a
child forked from a process with live trackers, each tracker carries on under a new
worker id with an empty batch (the parent pushes what was recorded before the fork); a
child that leaves with ``os._exit`` (as multiprocessing workers do) must call `close()`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import signal
import socket
import threading
import weakref
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from . import history
from .ages import release_ages
from .batch import Recorder, release_inflight
from .config import positive_seconds
from .connections import database_engine
from .domain import DEFAULT_MEMO, memo_lookup, normalize_domain
from .engine import RedisEngine
from .errors import BackendUnavailableError, ConfigurationError, FedtrackError
from .health.policy import DomainHealth, HealthPolicy
from .health.store import HealthRedis
from .health.sync import HealthLink, HealthSync
from .health.view import HealthView
from .history import HistoryBucket, read_history
from .identity import IdentityGuard, validate_identity
from .keys import NamespaceKeys, validate_worker_id
from .pusher import Pusher, PushStats
from .qshape import DEFAULT_TOP, read_qshape
from .reads import read_all, read_one
from .stats import ServerStat

if TYPE_CHECKING:
    from .flusher import Flusher
    from .health.webhooks import Webhook

log = logging.getLogger("fedtrack_redis.tracker")

#: How long `close()` (and so interpreter exit) waits for Redis to take the last batch.
CLOSE_TIMEOUT = 10.0


def default_worker_id() -> str:
    """A worker id unique per process: host, pid and random bits (``A-Za-z0-9_.-``)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class FederationTracker(Recorder):
    """Cluster-wide per-domain delivery diagnostics (queue, failures, successes, latency).

    ``redis`` is a Redis URL of any engine (one server, Sentinel, Cluster) or a client
    (the tracker opens its own connections from it). Recording calls only touch process
    memory; a daemon thread pushes the batch every ``push_interval`` seconds.
    ``worker_id`` must be unique per live process (default: host, pid, random). In-flight
    counts are held under a lease of ``lease_ttl`` seconds, released by the cluster when
    this process dies. ``database_id`` (``FEDTRACK_DATABASE_ID``) pins the identity of
    the namespace's database: pushes to a shard that Redis holds for another database
    are refused and kept (G11); without it, the first identity a push sees is kept.
    ``health`` is the namespace's `HealthPolicy` (docs/health.md): the first process
    passing one stores it, processes passing none use the stored one.
    """

    def __init__(
        self,
        redis: str | redis.Redis | RedisCluster,
        *,
        namespace: str = "default",
        push_interval: float = 1.0,
        worker_id: str | None = None,
        lease_ttl: float = 30.0,
        database_id: str | None = None,
        health: HealthPolicy | None = None,
    ) -> None:
        super().__init__()
        if health is not None and not isinstance(health, HealthPolicy):
            raise ConfigurationError(f"health: expected a HealthPolicy, got {health!r}")
        self._health_policy = health
        self._view = HealthView()
        #: The view's held-back domains, asked-about domains and claimed probes (one
        #: object each for the tracker's life): read by `should_attempt` without a lock.
        self._held = self._view.held
        self._asked = self._view.asked
        self._probes = self._view.probes
        self.keys = NamespaceKeys(namespace)
        self.namespace = namespace
        self._default_id = worker_id is None
        self.worker_id = default_worker_id() if worker_id is None else worker_id
        validate_worker_id(self.worker_id)
        self.push_interval = _seconds("push_interval", push_interval)
        self.lease_ttl = _seconds("lease_ttl", lease_ttl)
        self._database_id = validate_identity(database_id, "database_id") if database_id else None
        self._redis_source = redis
        self._redis = RedisEngine.open(redis)
        self._flushers: list[Flusher] = []
        self._close_lock = threading.Lock()
        self._closed = False
        self._health_link = HealthLink(
            HealthRedis(self._redis, self.keys), self._view, self._health_policy
        )
        self._pusher = self._start_pusher()
        self._health_sync = HealthSync(self._redis, self.keys, self._health_link).start()
        _register(self)

    def _start_pusher(self) -> Pusher:
        pusher = Pusher(
            self,
            self._redis,
            self.keys,
            self.worker_id,
            interval=self.push_interval,
            lease_ttl=self.lease_ttl,
            database_id=self._database_id,
            health=self._health_link,
        )
        pusher.start()
        return pusher

    def _after_fork(self) -> None:
        """In a forked child: carry on as a worker of its own, with an empty batch.

        The parent still owns (and pushes) what was recorded before the fork; the child
        needs its own worker id, so that its sequence numbers and its lease never mix
        with the parent's, and its own push thread (threads do not survive a fork).
        """
        Recorder.__init__(self)
        if self._default_id:
            self.worker_id = default_worker_id()
        else:
            self.worker_id = validate_worker_id(f"{self.worker_id[:100]}-f{os.getpid()}")
        self._close_lock = threading.Lock()
        self._redis = RedisEngine.open(self._redis_source)  # never the parent's connections
        self._flushers = []
        self._view = HealthView()
        self._held = self._view.held
        self._asked = self._view.asked
        self._probes = self._view.probes
        self._health_link = HealthLink(
            HealthRedis(self._redis, self.keys), self._view, self._health_policy
        )
        self._pusher = self._start_pusher()
        self._health_sync = HealthSync(self._redis, self.keys, self._health_link).start()

    # -- delivery health (docs/health.md) ------------------------------------------------

    def should_attempt(self, domain: str) -> bool:
        """Whether to attempt an outbound delivery to `domain` now (G1: memory only).

        False while the domain is held back (backoff or unavailable), except for the one
        probe per backoff interval that a background thread claimed for this process;
        True for anything else, an invalid name included (it never raises).
        """
        held = self._held
        if not held:
            return True
        try:
            if domain in held:  # the probe path of the view, inlined (one call less)
                self._asked.add(domain)
                return bool(self._probes) and self._view.probe(domain)
            name = memo_lookup(domain)
        except TypeError:  # unhashable: not a domain at all
            return True
        if name is None:
            name = DEFAULT_MEMO.get(domain)
        if name.__class__ is str and name in held:
            return self._view.probe(name)
        return True

    def health(self, domain: str) -> DomainHealth | None:
        """The cluster's health of `domain` (read from Redis), None when it was never
        recorded; this process's `should_attempt` follows the answer from now on."""
        name = normalize_domain(domain)
        found = self._health_link.side.read(name)
        if found is not None:
            self._view.follow(found)
        return found

    def reset_health(self, domain: str) -> str | None:
        """Make `domain` healthy cluster-wide (an operator's decision: its failures are
        forgotten, an event says so); returns its previous state, None when it had no
        health record."""
        name = normalize_domain(domain)
        previous, feed = self._health_link.side.reset(name)
        if feed:
            self._view.apply_feed(self.keys.shard_for(name).shard, feed)
        return previous

    @property
    def health_policy(self) -> HealthPolicy:
        """The namespace's policy as this process last resolved it."""
        return self._health_link.policy

    # -- reads (cluster-wide, from Redis) -------------------------------------------------

    def get_all(self) -> list[ServerStat]:
        """Every domain of the namespace, most recently active first (a fresh snapshot)."""
        return read_all(self._redis, self.keys)

    def get(self, domain: str) -> ServerStat | None:
        """The stats of one domain (any spelling), or None when it was never recorded."""
        return read_one(self._redis, self.keys, domain)

    def history(self, domain: str | None = None, window: str = "1h") -> list[HistoryBucket]:
        """The cluster's (or one domain's) series over `window` ("1h", "24h", "7d"): the
        aligned buckets ending with the current, unfinished one, oldest first, zero-filled
        (docs/history.md, G13). Cluster 1h/24h have 1-minute buckets, 7d and every domain
        window 5-minute ones. `InvalidWindowError` (a ValueError) for another window."""
        return read_history(self._redis, self.keys, domain, window)

    def watch(self, domain: str) -> bool:
        """Keep `domain`'s history whatever its activity; True when newly watched."""
        return history.watch(self._redis, self.keys, domain)

    def unwatch(self, domain: str) -> bool:
        """Stop keeping `domain`'s history for being watched; True when it was watched."""
        return history.unwatch(self._redis, self.keys, domain)

    def qshape(self, top: int = DEFAULT_TOP) -> list[tuple[str, list[int]]]:
        """The cluster's queue shape: the `top` domains with the most in-flight messages,
        each with T and its counts per age column (`ages.COLUMNS`), largest T first, ties
        by name; at most one push interval stale. `InvalidValueError` for a bad `top`."""
        return read_qshape(self._redis, self.keys, top).rows

    # -- push, persistence ----------------------------------------------------------------

    def push(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Push the pending batch now and wait until Redis acknowledged it.

        Raises `BackendUnavailableError` when Redis stays unreachable (or a shard stays
        unhydrated) for `timeout` seconds; the events stay pending, nothing is lost.
        """
        if self._closed:
            raise FedtrackError("FederationTracker is closed")
        self._pusher.push(timeout)

    @property
    def push_stats(self) -> PushStats:
        """Counters of the push thread (chunks, fields, failures, hydrations)."""
        return self._pusher.stats

    def hydrate(self, database: str | sa.Engine) -> int:
        """Add the database's persisted totals back into every shard Redis lost (G6).

        Idempotent (shards already hydrated are skipped) and safe to run from many
        processes at once. Creates missing tables. Raises `DatabaseMismatchError`, adding
        nothing, when `database` is not the one this namespace's Redis data came from, or
        not the one this tracker's pushes saw (G11). Returns the domains restored.
        """
        from .hydrate import hydrate_shards

        url = database if isinstance(database, str) else str(database.url)
        guard = IdentityGuard(self.namespace, pinned=self._database_id, database_url=url)
        if self._pusher.identity:
            guard.adopt(self._pusher.identity)
        engine = database_engine(database)
        try:
            restored = hydrate_shards(self._redis, self.keys, engine, guard=guard)
        finally:
            if engine is not database:
                engine.dispose()
        if guard.remembered:
            self._pusher.identity = self._pusher.identity or guard.remembered
        return restored

    def start_flusher(
        self,
        database: str | sa.Engine,
        interval: float = 30.0,
        *,
        webhooks: Sequence[Webhook] = (),
    ) -> Flusher:
        """Start a flusher (Redis → database) for this namespace; `close()` stops it.
        While it leads, it keeps the health history and sends `webhooks`."""
        from .flusher import Flusher

        flusher = Flusher(
            self._redis_source,
            database,
            namespace=self.namespace,
            interval=interval,
            database_id=self._database_id,
            webhooks=webhooks,
        ).start()
        self._flushers.append(flusher)
        return flusher

    # -- life cycle -------------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the push thread, release this worker's queue leases, push what is left,
        then stop the flushers started here (the leader flushes a last time). Idempotent.

        Raises `BackendUnavailableError` when Redis did not take the last batch within
        `timeout` seconds (those events are lost then).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._health_sync.close()
                self._pusher.stop()
                release_inflight(self)
                release_ages(self)
                self._pusher.push(timeout)
            except BackendUnavailableError as exc:
                log.error("closing tracker %s: %s", self.worker_id, exc)
                raise
            finally:
                for flusher in self._flushers:  # after the last push: they flush it too
                    try:
                        flusher.stop()
                    except Exception:
                        log.exception("stopping a flusher failed")
                self._redis.close()
                _unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> FederationTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FederationTracker(namespace={self.namespace!r}, worker_id={self.worker_id!r})"


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name}: expected a number of seconds, got {value!r}")
    return positive_seconds(name, value, value)


# -- process-wide hooks: interpreter exit and SIGTERM ---------------------------------------

_live: weakref.WeakSet[FederationTracker] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_atexit_registered = False


def _register(tracker: FederationTracker) -> None:
    global _atexit_registered
    with _hooks_lock:
        _live.add(tracker)
        register_atexit = not _atexit_registered
        _atexit_registered = True
    if register_atexit:
        atexit.register(close_all_trackers)
    if _on_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(tracker: FederationTracker) -> None:
    with _hooks_lock:
        _live.discard(tracker)
        last = not _live
    # With no live tracker left, SIGTERM goes back to its default at once: a Python-level
    # handler only runs when the main thread returns to Python code, so a process blocked
    # in C (a multiprocessing worker waiting on a semaphore) could otherwise not be
    # terminated at all.
    if last and _on_main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()  # another thread may have held it at the fork
    for tracker in list(_live):
        if not tracker.closed:
            tracker._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def close_all_trackers() -> None:
    """Close every live tracker of the process (interpreter exit, SIGTERM)."""
    with _hooks_lock:
        trackers = list(_live)
    for tracker in trackers:
        try:
            tracker.close()
        except Exception:
            log.exception("closing %r failed", tracker)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The main thread may be inside a recording call holding a tracker's lock: close on a
    # helper thread and return at once. A second SIGTERM terminates without waiting.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_close_then_terminate, name="fedtrack-sigterm").start()


def _close_then_terminate() -> None:
    close_all_trackers()
    os.kill(os.getpid(), signal.SIGTERM)  # the default action now: terminate
