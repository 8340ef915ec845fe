"""The write path of a `PolicyStore`: one transaction on the right database, then this
process's view, then Redis and the channel.

`PolicyWriter.run` checks the database's identity against the namespace's (G11), bumps
the version row first (the lock that orders every change of every host, taken before any
rule row), lets the change do its SQL and its audit entry in that same transaction, and
commits. A change that finds nothing to do returns no `Change`: its transaction rolls
back, so it bumps no version, writes no audit entry and sends nothing. A committed change
is applied to this process's view at once (a process reads its own writes), then to
Redis by a script that also publishes it; a change too big for one message (a large
import) is a ``resync``: Redis is rebuilt from the database and every process reloads.

When Redis is down a change still commits and applies locally, then raises
`PropagationPendingError`; the flusher leader finds Redis behind the database and
rebuilds it, so the change reaches the whole cluster once Redis answers again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis
import sqlalchemy as sa

from ..errors import BackendUnavailableError, DatabaseMismatchError, PropagationPendingError
from ..identity import IdentityGuard, read_database_id
from . import db
from .state import Change, PolicyState
from .sync import PolicyRedis, rebuild_redis

T = TypeVar("T")

#: What a change does inside its transaction, given the connection and its new version:
#: the `Change` to propagate (None: nothing changed, roll back) and the call's result.
Work = Callable[[sa.Connection, int], tuple[Change | None, T]]

#: How long `init()` keeps trying a database that refuses connections (too many clients).
INIT_DATABASE_PATIENCE = 30.0


class _UnchangedError(Exception):
    """Raised inside a transaction to roll it back: the change found nothing to do."""


class PolicyWriter:
    """Commits changes for one store: database, then its view, then Redis."""

    def __init__(
        self, database: sa.Engine, side: PolicyRedis, guard: IdentityGuard, state: PolicyState
    ) -> None:
        self.database = database
        self.side = side
        self.guard = guard
        self.state = state

    def run(self, work: Work[T]) -> T:
        """Run `work` in a transaction after the version bump, then propagate its change."""
        results: list[T] = []
        try:
            with self.transaction() as (connection, identity):
                version = db.bump_version(connection)
                change, result = work(connection, version)
                results.append(result)
                if change is None:
                    raise _UnchangedError
        except _UnchangedError:
            return results[0]
        assert change is not None
        if change.op == "resync":
            self.resync_everywhere(change.version)
        else:
            self.propagate(change, identity)
        return results[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[tuple[sa.Connection, str]]:
        """A transaction on the right database (G11): yields (connection, identity)."""
        try:
            in_redis = [self.side.identity()]
        except redis.RedisError:
            in_redis = []  # Redis down: rely on the identity remembered
        with database_errors("changing the federation policy"), self.database.begin() as connection:
            identity = read_database_id(connection)
            self.guard.check(identity, in_redis)
            yield connection, identity

    def resync_everywhere(self, version: int) -> None:
        """Reload this process from the database and rebuild Redis from the same snapshot
        (which tells every process to reload)."""
        with database_errors("reloading the federation policy"):
            snapshot = db.load_snapshot(self.database)
        self.state.replace(snapshot)
        try:
            rebuild_redis(self.database, self.side, self.guard, snapshot)
        except (redis.RedisError, sa.exc.DBAPIError) as exc:
            raise _pending(version, exc) from exc

    def propagate(self, change: Change, identity: str) -> None:
        if self.state.apply(change) == "gap":  # we lagged: catch up from the database
            with database_errors("reloading the federation policy"):
                self.state.replace(db.load_snapshot(self.database))
        try:
            outcome = self.side.apply(change, identity)
            if outcome == -1:
                rebuild_redis(self.database, self.side, self.guard)
            elif outcome == -2:
                raise DatabaseMismatchError(
                    f"change committed to database {identity}, but Redis holds the policy of"
                    f" database {self.side.identity()}; it was not propagated",
                    expected=self.side.identity(),
                    actual=identity,
                )
        except (redis.RedisError, sa.exc.DBAPIError) as exc:
            # Committed either way; a database lost between the commit and the rebuild of a
            # lagging Redis leaves the rebuild to the flusher leader's reconciliation.
            raise _pending(change.version, exc) from exc


def _pending(version: int, exc: Exception) -> PropagationPendingError:
    if isinstance(exc, redis.RedisError):
        return PropagationPendingError(
            f"change committed (version {version}) but Redis is unavailable ({exc});"
            " every process applies it once Redis is back"
        )
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return PropagationPendingError(
        f"change committed (version {version}) but the database went away before Redis"
        f" was rebuilt from it ({type(cause).__name__}); the flusher leader rebuilds Redis"
        " once the database is back"
    )


def patiently(action: Callable[[], T]) -> T:
    """Run `action`, retrying while the database refuses connections (too many clients,
    a restart), for up to `INIT_DATABASE_PATIENCE` seconds."""
    deadline = time.monotonic() + INIT_DATABASE_PATIENCE
    delay = 0.05
    while True:
        try:
            return action()
        except sa.exc.OperationalError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextlib.contextmanager
def database_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise BackendUnavailableError(
            f"database unavailable while {action} ({type(exc.orig).__name__})"
        ) from exc
