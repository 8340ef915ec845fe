"""Flusher leader election (G4): a Redis lock with a TTL plus a fencing token from the database.

Any number of flushers compete for one key, ``fedtrack:{<ns>:flusher}:lock``: a random
token written with ``SET NX PX <ttl>``, extended by its holder every ``ttl / 4`` from a
daemon thread (``lock_renew.lua``, compare-and-pexpire) and deleted on release
(``lock_release.lua``, compare-and-del). The holder considers itself leader only until
``ttl`` after it *sent* its last successful SET or renewal, so it steps down no later than
the key expires in Redis and two flushers never both believe they lead.

Winning the lock is not enough to write: right after it, the winner takes a fencing token
from the database (``UPDATE federation_flusher SET fence = fence + 1 … RETURNING fence``),
so tokens keep increasing even when Redis loses its data, and every flush transaction
checks it first (`stats.check_fence`). A stalled former holder can therefore never write
after a newer one. Its sessions are bounded by PostgreSQL's own timeouts (``ttl / 2``) so a
flusher frozen inside its transaction does not hold the token row for longer than that.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import redis
import sqlalchemy as sa

from .engine import RedisEngine
from .errors import BackendUnavailableError
from .keys import NamespaceKeys
from .metrics import THREAD_ERRORS, track_leadership
from .scripts import Scripts
from .store import stats as store

log = logging.getLogger("fedtrack_redis.flusher")

#: Fraction of the TTL during which a holder still trusts its lock (clock-rate margin).
_TRUST = 0.95


class Election:
    """One flusher's side of the election: acquire, renew, release, fencing token."""

    def __init__(
        self,
        redis: RedisEngine,
        keys: NamespaceKeys,
        engine: sa.Engine,
        *,
        ttl: float,
        scripts: Scripts | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._key = keys.flusher_lock
        self._ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._scripts = scripts or Scripts(redis)
        self._state = threading.Lock()
        self._token: str | None = None
        self._fence: int | None = None
        self._valid_until = 0.0
        #: Incremented at every acquisition (not at `refresh_fence`).
        self.term = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        track_leadership(self)

    # -- state ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        with self._state:
            return self._fence is not None and time.monotonic() < self._valid_until

    @property
    def fence(self) -> int | None:
        """The fencing token while leader, else None."""
        with self._state:
            if self._fence is not None and time.monotonic() < self._valid_until:
                return self._fence
            return None

    # -- acquire / renew / release ------------------------------------------------------------

    def try_acquire(self) -> float:
        """Try to become leader; 0.0 when leader, else seconds until the lock may be free."""
        if self.is_leader:
            return 0.0
        self._expire_if_stale()
        token = secrets.token_hex(16)
        sent = time.monotonic()
        with self._redis.node_for(self._key).pipeline(transaction=True) as pipe:
            pipe.set(self._key, token, nx=True, px=self._ttl_ms)
            pipe.pttl(self._key)
            won, remaining = pipe.execute()
        if not won:
            return max(int(remaining), 0) / 1000.0
        with self._state:
            self._token, self._fence, self._valid_until = token, None, sent + self._ttl * _TRUST
        try:
            fence = self._take_fence()
        except BaseException:
            self._forget(token)
            self._release(token)
            raise
        with self._state:
            if self._token != token:  # lost while waiting for the database
                return self._ttl
            self._fence = fence
            self.term += 1
        log.info("flusher leadership acquired (fencing token %d)", fence)
        return 0.0

    def refresh_fence(self) -> bool:
        """Take a new fencing token while keeping the lock (after this process hydrated).

        Hydration takes a token of its own to fence out flushes of snapshots read before
        Redis lost its data; the leader that hydrated takes a fresh one to keep writing.
        """
        if not self.renew():
            return False
        with self._state:
            token = self._token
        try:
            fence = self._take_fence()
        except BackendUnavailableError as exc:
            log.warning("could not take a new fencing token (%s)", exc)
            return False
        with self._state:
            if self._token != token:
                return False
            self._fence = fence
        log.info("flusher fencing token renewed (%d)", fence)
        return True

    def renew(self) -> bool:
        """Extend the lock if we hold it; step down when it is no longer ours."""
        with self._state:
            token = self._token
        if token is None:
            return False
        sent = time.monotonic()
        try:
            ours = int(self._scripts.run("lock_renew", [self._key], [token, self._ttl_ms])) == 1
        except redis.RedisError as exc:
            log.warning("flusher lock renewal failed (%s)", exc)
            self._expire_if_stale()
            return self.is_leader
        if not ours:
            if self._forget(token):
                log.warning("flusher leadership lost: the lock is no longer ours")
            return False
        with self._state:
            if self._token == token:
                self._valid_until = sent + self._ttl * _TRUST
        return True

    def drop(self, reason: str) -> None:
        """Step down now (fenced out, or stopping) and release the lock if it is still ours."""
        with self._state:
            token = self._token
        if token is not None and self._forget(token):
            log.warning("flusher leadership dropped: %s", reason)
            self._release(token)

    def release(self) -> None:
        """Give up leadership (idempotent)."""
        with self._state:
            token = self._token
        if token is not None and self._forget(token):
            self._release(token)
            log.info("flusher leadership released")

    # -- renewal thread ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._renew_loop, name="fedtrack-flusher-lock", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(10.0, self._ttl))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._ttl / 4):
            try:
                self.renew()
            except Exception:  # never let the thread die
                THREAD_ERRORS.labels("election").inc()
                log.exception("flusher lock renewal: unexpected error")

    # -- internals ---------------------------------------------------------------------------

    def _take_fence(self) -> int:
        try:
            with self._engine.begin() as connection:
                store.set_timeouts(connection, self._ttl / 2)
                return store.bump_fence(connection)
        except sa.exc.DBAPIError as exc:
            raise BackendUnavailableError(
                f"database unavailable while taking a fencing token ({type(exc.orig).__name__})"
            ) from exc

    def _forget(self, token: str) -> bool:
        with self._state:
            if self._token != token:
                return False
            self._token, self._fence, self._valid_until = None, None, 0.0
            return True

    def _expire_if_stale(self) -> None:
        with self._state:
            token = self._token
            stale = token is not None and time.monotonic() >= self._valid_until
        if token is not None and stale and self._forget(token):
            log.warning("flusher leadership lost: the lock could not be renewed in time")

    def _release(self, token: str) -> None:
        try:
            self._scripts.run("lock_release", [self._key], [token])
        except redis.RedisError as exc:
            log.warning("could not release the flusher lock (%s); it expires by itself", exc)
