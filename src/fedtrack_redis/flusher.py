"""`Flusher`: copy the changed Redis stats into the database, from exactly one process (G4, G5).

Every process may run a Flusher; one of them leads (`election.Election`: a Redis lock
with a TTL plus a fencing token from the database) and writes. Each tick (about a
second) every Flusher, leader or standby:

* checks that its database is the namespace's (G11, `identity.IdentityGuard`: the 16
  ``hydrated`` markers and the policy keys name the database Redis came from). On a
  mismatch it writes nothing, never takes the lock (a leader steps down), and says so on
  every tick: a log line, ``fedtrack_database_mismatch``, and `Flusher.mismatch`;
* releases expired queue leases (`leases.reap_expired_leases`);
* if standby, tries to take the lock (sleeping until its TTL runs out, not longer);
* if leader: adopts legacy markers, hydrates shards whose marker is missing (one
  hydrator for the cluster, so a Redis that came back empty is refilled once; after an
  upgrade of the key schema only once the old shard is retired, `upgrade`), and when
  the interval has passed, flushes.

A flush closes every shard's flush epoch (`snapshot.EpochReader`: the domains changed
in it and the acks applied in it, frozen at one instant, copy on write), then, in ONE
transaction whose first statement checks the fencing token, reads each epoch in short
pages and writes the rows as absolute values, with the acks. After the commit the
epochs are freed. A flush that fails (Redis, the database, fenced out) leaves its epochs
closing: the next flush, by this leader or the next, resumes them, the same snapshot, so
nothing is lost, and a successor never needs a full flush.

`flush_once()` works with or without `start()`: if this flusher is not the leader it
tries to become it (the lock may be free), then flushes. Without `start()` nobody renews
the lock between calls, so it lapses ``lock_ttl`` after the last call unless `stop()`
releases it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis
import sqlalchemy as sa
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster

from . import hydrate, tops
from .chunk import ACK_RETENTION_SECONDS
from .connections import database_engine
from .election import Election
from .engine import RedisEngine
from .errors import (
    BackendUnavailableError,
    ConfigurationError,
    DatabaseMismatchError,
    FedtrackError,
    FencedOutError,
)
from .health.webhooks import HealthDispatcher, Webhook
from .identity import IdentityGuard, database_id, is_identity
from .keys import NamespaceKeys, ShardKeys
from .leases import reap_expired_leases
from .metrics import FLUSH_ROWS, FLUSH_SECONDS, THREAD_ERRORS, track_mismatch
from .policy.expiry import expire_due_rules
from .policy.sync import PolicyRedis, reconcile_with_database
from .redact import redact_url
from .scripts import Scripts
from .series import SeriesCloser
from .snapshot import EpochLostError, EpochReader
from .store import migrate
from .store import stats as store
from .upgrade import PreviousSchema

log = logging.getLogger("fedtrack_redis.flusher")

#: Seconds between ticks at most (identity checks, lease reaping, standby lock attempts).
TICK = 1.0


class Flusher:
    """Persist the per-domain stats of a namespace; see the module docstring.

    ``database_id`` pins the identity of the namespace's database (``FEDTRACK_DATABASE_ID``):
    a flusher whose database has another one refuses to work even when Redis is empty.
    """

    def __init__(
        self,
        redis: str | redis.Redis | RedisCluster | RedisEngine,
        database: str | sa.Engine,
        *,
        namespace: str = "default",
        interval: float = 30.0,
        lock_ttl: float = 10.0,
        database_id: str | None = None,
        webhooks: Sequence[Webhook] = (),
    ) -> None:
        for name, value in (("interval", interval), ("lock_ttl", lock_ttl)):
            if not isinstance(value, int | float) or not 0 < value < 86400:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        self.keys = NamespaceKeys(namespace)
        self.interval = float(interval)
        self.lock_ttl = float(lock_ttl)
        self._redis_source = redis
        self._database_source = database
        url = database if isinstance(database, str) else str(database.url)
        self.guard = IdentityGuard(namespace, pinned=database_id, database_url=url)
        self._engine: RedisEngine | None = None
        self._db: sa.Engine | None = None
        self._scripts: Scripts | None = None
        self._epochs: EpochReader | None = None
        self._policy: PolicyRedis | None = None
        self._series: SeriesCloser | None = None
        self._previous: PreviousSchema | None = None
        self._policy_lagging: list[int | None] = [None]
        self._election: Election | None = None
        self._migrated = False
        self._database_id: str | None = None
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._fenced = False
        #: Why this flusher refuses to work (G11), or None.
        self.mismatch: str | None = None
        track_mismatch(self)
        #: Receivers of health events; the leader's `HealthDispatcher` sends them.
        self.webhooks = tuple(webhooks)
        for hook in self.webhooks:
            if not isinstance(hook, Webhook):
                raise ConfigurationError(f"webhooks: expected Webhook objects, got {hook!r}")
        self._dispatcher: HealthDispatcher | None = None
        #: Test hook: called with "before_transaction", "after_read", "before_commit".
        self._hook: Callable[[str], None] | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this flusher holds the lock and a fencing token right now."""
        return self._election is not None and self._election.is_leader

    @property
    def database_id(self) -> str | None:
        """The identity of this flusher's database, once read."""
        return self._database_id

    def start(self) -> Flusher:
        """Start the background threads (idempotent); returns self."""
        if self._stopped:
            raise ConfigurationError("a stopped Flusher cannot be started again")
        if self._thread is None:
            self._connect().start()
            self._thread = threading.Thread(target=self._run, name="fedtrack-flusher", daemon=True)
            self._thread.start()
            assert self._engine is not None and self._db is not None
            self._dispatcher = HealthDispatcher(
                self._engine, self.keys, self._db, self.webhooks, self._may_dispatch
            ).start()
        return self

    def _may_dispatch(self) -> bool:
        """The health events are the leader's, once the tables exist (G11 checked)."""
        return self.is_leader and self._migrated and self.mismatch is None

    def flush_once(self) -> int:
        """Flush now if leader (becoming it if the lock is free); rows written, else 0.

        Raises `DatabaseMismatchError` when this flusher's database is not the
        namespace's, `BackendUnavailableError` when Redis or the database cannot be
        reached (the domains are kept for the next flush). Returns 0 when another flusher
        leads, including when a newer leader fenced this one out mid-flush.
        """
        if self._stopped:
            return 0
        with self._flush_lock:
            try:
                self._check_identity()
                election = self._connect()
                for _attempt in range(2):  # once more if fenced out by a hydration
                    # extends our lock while Redis still holds it, even when this
                    # process's trust in it ran out between two calls; notices a lock
                    # lost with Redis's data or taken by another flusher
                    election.renew()
                    if not election.is_leader and election.try_acquire() > 0:
                        return 0
                    self._lead()
                    self._fenced = False
                    rows = self._flush()
                    if not self._fenced:
                        self._close_series()
                        return rows
                return 0
            except redis.RedisError as exc:
                raise BackendUnavailableError(
                    f"Redis unavailable while flushing ({type(exc).__name__}: {exc})"
                ) from exc
            except sa.exc.DBAPIError as exc:
                raise BackendUnavailableError(
                    f"database unavailable while flushing ({type(exc.orig).__name__})"
                ) from exc

    def stop(self) -> None:
        """Stop the threads, flush a last time when leader, release the lock (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(30.0, 3 * self.lock_ttl))
        election = self._election
        if election is not None:
            if election.is_leader:
                with self._flush_lock:
                    try:
                        self._flush()
                    except Exception as exc:
                        log.warning("final flush failed (%s); the next leader writes it", exc)
            election.stop()
            election.release()
        if self._engine is not None:
            self._engine.close()
        if self._db is not None and not isinstance(self._database_source, sa.Engine):
            self._db.dispose()

    close = stop

    def __enter__(self) -> Flusher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        url = self._database_source
        shown = redact_url(url) if isinstance(url, str) else redact_url(str(url.url))
        return f"Flusher(namespace={self.keys.namespace!r}, database={shown!r})"

    # -- the background thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = ExponentialBackoff(cap=self.interval, base=min(0.25, self.interval / 4))
        failures = 0
        next_flush = 0.0  # flush as soon as we lead
        tick = min(TICK, self.interval, self.lock_ttl / 4)
        while not self._stop.is_set():
            wait = tick
            try:
                with self._flush_lock:
                    next_flush, wait = self._tick(next_flush, tick)
                failures = 0
            except DatabaseMismatchError as exc:
                log.error("flusher refuses to work: %s", exc)
            except Exception as exc:
                failures += 1
                wait = backoff.compute(failures)
                next_flush = time.monotonic() + wait
                if isinstance(exc, redis.RedisError | sa.exc.DBAPIError | BackendUnavailableError):
                    log.warning("flusher: %s; retrying in %.2f s", _describe(exc), wait)
                else:
                    THREAD_ERRORS.labels("flusher").inc()
                    log.exception("flusher: unexpected error; retrying in %.2f s", wait)
            self._stop.wait(wait)

    def _tick(self, next_flush: float, tick: float) -> tuple[float, float]:
        """One tick of the loop; returns (next flush time, seconds to wait)."""
        if self._engine is not None:
            self._engine.verify_master()
        self._check_identity()
        self._reap_leases()
        election = self._connect()
        wait = tick
        if not election.is_leader:
            free_in = election.try_acquire()
            if free_in > 0:
                wait = min(tick, free_in + 0.005)
            else:
                next_flush = 0.0
        if election.is_leader:
            self._lead()
        if election.is_leader and time.monotonic() >= next_flush:
            self._flush()
            next_flush = time.monotonic() + self.interval
        if election.is_leader:
            self._close_series()
        if election.is_leader:
            wait = min(tick, max(0.0, next_flush - time.monotonic()))
        return next_flush, wait

    # -- internals ------------------------------------------------------------------------------

    def _connect(self) -> Election:
        if self._election is None:
            self._engine = RedisEngine.open(self._redis_source)
            self._db = database_engine(self._database_source)
            self._scripts = Scripts(self._engine)
            self._epochs = EpochReader(self._engine, self._scripts, self.keys)
            self._policy = PolicyRedis(self._engine, self.keys)
            self._election = Election(
                self._engine, self.keys, self._db, ttl=self.lock_ttl, scripts=self._scripts
            )
        return self._election

    def _check_identity(self) -> None:
        """Create missing tables once, then refuse to go on with another database (G11)."""
        election = self._connect()
        assert self._engine is not None and self._db is not None
        if not self._migrated:
            migrate.upgrade(self._db)
            self._migrated = True
        if self._database_id is None:
            self._database_id = database_id(self._db)
        try:
            self.guard.check(self._database_id, hydrate.redis_identities(self._engine, self.keys))
        except DatabaseMismatchError as exc:
            first = self.mismatch is None
            self.mismatch = str(exc)
            if election.is_leader:
                election.drop("database mismatch")
            if first:
                log.error("flusher: %s", exc)
            raise
        if self.mismatch is not None:
            log.warning("flusher: the database mismatch is resolved; working again")
        self.mismatch = None

    def _lead(self) -> None:
        """The leader's reconciliation: adopt legacy markers, hydrate lost shards, rebuild
        the policy in Redis when it is missing or behind the database."""
        engine, election = self._engine, self._election
        assert engine is not None and election is not None and self._db is not None
        assert self._scripts is not None and self._database_id is not None
        assert self._policy is not None
        try:
            reconcile_with_database(self._db, self._policy, self.guard, self._policy_lagging)
        except DatabaseMismatchError:
            raise
        except (redis.RedisError, sa.exc.DBAPIError) as exc:
            log.warning("policy reconciliation failed (%s); retried next tick", _describe(exc))
        expire_due_rules(self._db, self._policy, self.guard)
        values = hydrate.marker_values(engine, self.keys)
        for shard, value in values.items():
            if value is not None and not is_identity(value):
                marker = self.keys.shards[shard].hydrated
                if self._scripts.run("marker_adopt", [marker], [value, self._database_id]):
                    log.info(
                        "shard %02d: legacy marker adopted by database %s", shard, self._database_id
                    )
        if self._previous is None:
            self._previous = PreviousSchema(engine, self._scripts, self.keys)
        missing = [shard for shard, value in values.items() if value is None]
        if missing:
            missing = self._previous.hydratable(missing, self._database_id)
        self._previous.drop_some()
        if not missing:
            return
        log.warning("shards %s lost their data: hydrating them from the database", missing)
        try:
            hydrate.hydrate_shards(engine, self.keys, self._db, missing, guard=self.guard)
        except DatabaseMismatchError:
            raise
        except FedtrackError as exc:  # flush the other shards anyway; retried next tick
            log.warning("hydration failed (%s)", exc)
        election.refresh_fence()  # hydrating took a fencing token: take a newer one

    def _close_series(self) -> None:
        """The leader closes finished history buckets (`series`); a failure is logged and
        retried next tick, never in the way of flushing."""
        if self._engine is None or self._scripts is None:
            return
        if self._series is None:
            self._series = SeriesCloser(self._engine, self._scripts, self.keys)
        try:
            self._series.close()
        except (redis.RedisError, FedtrackError) as exc:
            log.warning("closing history buckets failed (%s); retried next tick", _describe(exc))

    def _reap_leases(self) -> None:
        if self._engine is None:
            return
        try:
            reap_expired_leases(self._engine, self.keys)
        except Exception as exc:
            log.warning("releasing expired queue leases failed (%s)", exc)

    def _flush(self) -> int:
        election = self._connect()
        fence = election.fence
        if fence is None:
            return 0
        assert self._db is not None and self._epochs is not None
        started = time.perf_counter()
        epochs = self._epochs
        shards = epochs.open(fence)
        if not shards:
            return 0
        if self._hook is not None:
            self._hook("before_transaction")
        seen_at = self._server_time()
        try:
            with self._db.begin() as connection:
                store.set_timeouts(connection, self.lock_ttl / 2)
                store.check_fence(connection, fence)  # holds the token row until commit
                rows = self._copy(connection, shards)
                if self._hook is not None:
                    self._hook("after_read")
                store.upsert_acks(
                    connection, [ack for shard in shards for ack in epochs.acks(shard, seen_at)]
                )
                store.prune_acks(connection, seen_at - ACK_RETENTION_SECONDS)
                if self._hook is not None:
                    self._hook("before_commit")
        except FencedOutError as exc:
            self._fenced = True
            log.warning("flush refused, nothing written: %s", exc)
            election.drop(str(exc))
            return 0
        except EpochLostError as exc:
            log.warning("flush abandoned, nothing written: %s", exc)
            return 0
        ended = epochs.end(shards, fence)
        if ended < len(shards):
            log.warning("a newer leader owns %d epoch(s) now", len(shards) - ended)
        duration = time.perf_counter() - started
        FLUSH_SECONDS.observe(duration)
        FLUSH_ROWS.inc(rows)
        log.info("flushed %d rows in %.3f s (fencing token %d)", rows, duration, fence)
        return rows

    def _copy(self, connection: sa.Connection, shards: list[ShardKeys]) -> int:
        """Write each shard's epoch, and score its domains in the shard's top lists;
        PostgreSQL writes one page while the next is read from Redis. Returns the rows
        written."""
        assert self._epochs is not None
        assert self._engine is not None
        writer = store.StatsWriter(connection)
        top: tops.TopRefresh | None = None
        try:
            for shard, lines in self._epochs.read(shards):
                if top is None or top.shard is not shard:
                    if top is not None:
                        top.finish()
                    top = tops.TopRefresh(self._engine, shard).load()
                writer.put(lines)
                top.add(lines)
            if top is not None:
                top.finish()
        except BaseException:
            writer.abort()
            raise
        return writer.finish()

    def _server_time(self) -> int:
        assert self._engine is not None
        return int(self._engine.node_for(self.keys.flusher_lock).time()[0])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        return f"database unavailable ({type(exc.orig).__name__})"
    if isinstance(exc, redis.RedisError):
        return f"Redis unavailable ({type(exc).__name__}: {exc})"
    return str(exc)
