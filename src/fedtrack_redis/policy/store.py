"""`PolicyStore`: the cluster's federation policy, changed through the database.

A change first checks that this process's database is the namespace's (G11), commits to
the database under a new version (`db.bump_version`), is applied to this process's view,
then to Redis by a script that also publishes it, all before the call returns. Every
process's `PolicySync` applies it to its own view. Reads (`has_rule`, `list_rules`,
`count`, `get_policy`) only touch process memory.

A store holds no database connection while it only follows the policy: `init()` reads
the policy from Redis (the database only when Redis has none, and once for the schema
check), and a change opens a connection for its own transaction (no pool on PostgreSQL).

When Redis is down a change still commits and applies locally, then raises
`PropagationPendingError`; the flusher leader finds Redis behind the database and
rebuilds it, so the change reaches the whole cluster once Redis answers again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from ..connections import database_engine
from ..domain import DEFAULT_MEMO, normalize_domain
from ..engine import RedisEngine
from ..errors import (
    BackendUnavailableError,
    DatabaseMismatchError,
    NotInitializedError,
    PropagationPendingError,
)
from ..identity import IdentityGuard, read_database_id
from ..keys import NamespaceKeys
from ..store import migrate
from . import db
from .state import Change, PolicyState, PolicyView, parse_policy
from .sync import PolicyRedis, PolicySync, rebuild_redis

log = logging.getLogger("fedtrack_redis.policy")

T = TypeVar("T")

#: How long `init()` keeps trying a database that refuses connections (too many clients).
INIT_DATABASE_PATIENCE = 30.0


class PolicyStore:
    """Federation policy (ACCEPT/REJECT), domain rules and the federation switch.

    ``database`` is a SQLAlchemy URL or Engine, ``redis`` a Redis URL (any engine) or
    client; the constructor does no I/O. Call `init()` once before use. ``database_id``
    (``FEDTRACK_DATABASE_ID``) pins the identity of the namespace's database.
    """

    def __init__(
        self,
        database: str | sa.Engine,
        redis: str | redis.Redis | RedisCluster,
        *,
        namespace: str = "default",
        resync_interval: float = 1.0,
        database_id: str | None = None,
    ) -> None:
        self.keys = NamespaceKeys(namespace)
        self.namespace = namespace
        #: The current view, read by `check_federation_policy` (one attribute read).
        self.view: PolicyView = PolicyState().view
        self.state = PolicyState(on_swap=self._set_view)
        self._database_source = database
        self._redis_source = redis
        self._resync_interval = resync_interval
        url = database if isinstance(database, str) else str(database.url)
        self.guard = IdentityGuard(namespace, pinned=database_id, database_url=url)
        self._database: sa.Engine | None = None
        self._redis: RedisEngine | None = None
        self._side: PolicyRedis | None = None
        self._sync: PolicySync | None = None
        self._closed = False
        self._listeners: list[Callable[[Change], None]] = []

    def _set_view(self, view: PolicyView) -> None:
        self.view = view

    # -- lifecycle ------------------------------------------------------------------

    def init(self, *, migrate: bool = False) -> PolicyStore:
        """Check the schema (or, with ``migrate=True``, upgrade it), load the policy —
        from Redis, or from the database when Redis has none — and start following
        changes. Raises `SchemaMismatchError` (one line) when the database's schema is
        not this version's: run ``fedtrack db upgrade``."""
        if self._closed:
            raise NotInitializedError("PolicyStore is closed")
        if self._sync is not None:
            return self
        database = self._database_engine()
        with _database_errors("checking the database schema"):
            _patiently(lambda: _schema(database, migrate))
        engine = RedisEngine.open(self._redis_source)
        side = PolicyRedis(engine, self.keys)
        found = None
        try:
            found = side.read_snapshot()
        except redis.RedisError as exc:
            log.warning("Redis unavailable at start (%s); serving rules from the database", exc)
        if found is not None:
            snapshot, identity = found
            self.guard.observe([identity])
            self.state.replace(snapshot)
        else:
            with _database_errors("loading the federation policy"):
                self.state.replace(_patiently(lambda: db.load_snapshot(database)))
        self._redis, self._side = engine, side
        self._sync = PolicySync(
            self.state, side, self.guard, interval=self._resync_interval, listeners=self._listeners
        )
        self._sync.start()
        return self

    def close(self) -> None:
        """Stop following changes and release connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._sync is not None:
            self._sync.close()
        if self._redis is not None:
            self._redis.close()
        if self._database is not None and not isinstance(self._database_source, sa.Engine):
            self._database.dispose()

    def __enter__(self) -> PolicyStore:
        return self.init()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PolicyStore(namespace={self.namespace!r}, version={self.view.version})"

    # -- reads: process memory only ------------------------------------------------------

    def has_rule(self, domain: str) -> bool:
        """Whether a rule covers `domain` (False for an invalid name; never raises on I/O)."""
        view = self._ready_view()
        name = DEFAULT_MEMO.get(domain)
        return name is not None and name in view.rules

    def list_rules(self) -> dict[str, int]:
        """Every rule: domain → created_at (unix seconds)."""
        return dict(self._ready_view().rules)

    def count(self) -> int:
        return len(self._ready_view().rules)

    def get_policy(self) -> str:
        """``ACCEPT`` (rules are a blocklist) or ``REJECT`` (rules are an allowlist)."""
        return self._ready_view().policy

    def get_enabled(self) -> bool:
        """The cluster-wide federation switch; when off, only the local domain is allowed."""
        return self._ready_view().enabled

    def ping_database(self) -> bool:
        """Whether the database answers a trivial query now."""
        if self._database is None:
            return False
        try:
            with self._database.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def database_id(self) -> str | None:
        """The identity of this store's database (reads it), or None when unreachable."""
        try:
            with self._database_engine().connect() as connection:
                return read_database_id(connection)
        except (sa.exc.SQLAlchemyError, BackendUnavailableError):
            return None

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Call `listener(change)` from the sync thread after each change this process applies
        from another process (``op == "resync"`` after a full reload). Keep it quick."""
        self._listeners.append(listener)

    @property
    def version(self) -> int:
        """Version of the policy this process holds (increases with every change)."""
        return self.view.version

    # -- changes: database, then this view, then Redis + channel ---------------------

    def add_rule(self, domain: str) -> int:
        """Add a rule (adding an existing one keeps its first created_at); return the total."""
        name = normalize_domain(domain)
        with self._transaction() as (connection, identity):
            version = db.bump_version(connection)
            created = db.add_rule(connection, name, int(time.time()))
            total = db.count_rules(connection)
        self._propagate(Change(version, "add", domain=name, created_at=created), identity)
        return total

    def add_rules(self, domains: Iterable[str]) -> int:
        """Add many rules in one transaction; return how many were new.

        Every name is validated first (one `InvalidDomainError` and nothing changes). The
        cluster reloads the policy once (a ``resync``) instead of once per rule.
        """
        names = sorted({normalize_domain(domain) for domain in domains})
        with self._transaction() as (connection, _identity):
            before = db.count_rules(connection)
            db.bump_version(connection)
            db.insert_rules(connection, names, int(time.time()))
            added = db.count_rules(connection) - before
        self._resync_everywhere()
        return added

    def remove_rule(self, domain: str) -> int:
        """Remove a rule (an unknown rule is not an error); return how many remain."""
        name = normalize_domain(domain)
        with self._transaction() as (connection, identity):
            version = db.bump_version(connection)
            db.remove_rule(connection, name)
            total = db.count_rules(connection)
        self._propagate(Change(version, "remove", domain=name), identity)
        return total

    def flush_rules(self) -> None:
        """Remove every rule."""
        with self._transaction() as (connection, identity):
            version = db.bump_version(connection)
            db.flush_rules(connection)
        self._propagate(Change(version, "flush"), identity)

    def set_policy(self, mode: str) -> None:
        """Set the cluster policy: ``ACCEPT`` or ``REJECT`` in any case."""
        policy = parse_policy(mode)
        with self._transaction() as (connection, identity):
            version = db.bump_version(connection)
            db.set_setting(connection, "policy", policy)
        self._propagate(Change(version, "policy", policy=policy), identity)

    def set_enabled(self, enabled: bool) -> None:
        """Turn federation on or off for the whole cluster."""
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be a bool")
        with self._transaction() as (connection, identity):
            version = db.bump_version(connection)
            db.set_setting(connection, "enabled", "true" if enabled else "false")
        self._propagate(Change(version, "enabled", enabled=enabled), identity)

    # -- internals ---------------------------------------------------------------------------

    def _ready_view(self) -> PolicyView:
        view = self.view
        if not view.ready or self._closed:
            raise NotInitializedError("PolicyStore.init() has not been called (or it is closed)")
        return view

    def _database_engine(self) -> sa.Engine:
        if self._database is None:
            self._database = database_engine(self._database_source, pooled=False)
        return self._database

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[sa.Connection, str]]:
        """A transaction on the right database (G11): yields (connection, identity)."""
        self._ready_view()
        assert self._side is not None
        try:
            in_redis = [self._side.identity()]
        except redis.RedisError:
            in_redis = []  # Redis down: rely on the identity remembered
        with (
            _database_errors("changing the federation policy"),
            self._database_engine().begin() as connection,
        ):
            identity = read_database_id(connection)
            self.guard.check(identity, in_redis)
            yield connection, identity

    def _resync_everywhere(self) -> None:
        assert self._side is not None
        database = self._database_engine()
        with _database_errors("reloading the federation policy"):
            snapshot = db.load_snapshot(database)
        self.state.replace(snapshot)
        try:
            rebuild_redis(database, self._side, self.guard)
        except redis.RedisError as exc:
            raise PropagationPendingError(
                f"change committed (version {snapshot.version}) but Redis is unavailable ({exc});"
                " every process applies it once Redis is back"
            ) from exc

    def _propagate(self, change: Change, identity: str) -> None:
        assert self._side is not None
        database = self._database_engine()
        if self.state.apply(change) == "gap":  # we lagged: catch up from the database
            with _database_errors("reloading the federation policy"):
                self.state.replace(db.load_snapshot(database))
        try:
            outcome = self._side.apply(change, identity)
            if outcome == -1:
                rebuild_redis(database, self._side, self.guard)
            elif outcome == -2:
                raise DatabaseMismatchError(
                    f"change committed to database {identity}, but Redis holds the policy of"
                    f" database {self._side.identity()}; it was not propagated",
                    expected=self._side.identity(),
                    actual=identity,
                )
        except redis.RedisError as exc:
            raise PropagationPendingError(
                f"change committed (version {change.version}) but Redis is unavailable ({exc});"
                " every process applies it once Redis is back"
            ) from exc


def _schema(database: sa.Engine, upgrade: bool) -> None:
    if upgrade:
        migrate.upgrade(database)
    else:
        migrate.check(database)


def _patiently(action: Callable[[], T]) -> T:
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
def _database_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise BackendUnavailableError(
            f"database unavailable while {action} ({type(exc.orig).__name__})"
        ) from exc
