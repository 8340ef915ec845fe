"""`PolicyStore`: the cluster's federation policy, changed through the database.

A change commits to the database under a new version (`db.bump_version`), is applied to
this process's cache, then to Redis by a script that also publishes it, all before the
call returns. Every process's `PolicySync` applies it to its own cache. Reads
(`has_rule`, `list_rules`, `count`, `get_policy`) only touch process memory.

When Redis is down a change still commits and applies locally, then raises
`PropagationPendingError`; every process reconciles Redis with the database each
second, so the change reaches the whole cluster once Redis answers again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator

import sqlalchemy as sa
from redis import Redis, RedisError

from ..connections import database_engine, redis_client
from ..domain import DEFAULT_MEMO, normalize_domain
from ..errors import BackendUnavailableError, NotInitializedError, PropagationPendingError
from ..keys import NamespaceKeys
from ..store import migrate
from . import db
from .state import Change, PolicyState, parse_policy
from .sync import PolicyRedis, PolicySync, rebuild_redis

log = logging.getLogger("fedtrack_redis.policy")


class PolicyStore:
    """Federation policy (ACCEPT/REJECT), domain rules and the federation switch.

    ``database`` is a SQLAlchemy URL or Engine, ``redis`` a Redis URL or client; the
    constructor does no I/O. Call `init()` once before use.
    """

    def __init__(
        self,
        database: str | sa.Engine,
        redis: str | Redis,
        *,
        namespace: str = "default",
        resync_interval: float = 1.0,
    ) -> None:
        self.keys = NamespaceKeys(namespace)
        self.namespace = namespace
        self.state = PolicyState()
        self._database_source = database
        self._redis_source = redis
        self._resync_interval = resync_interval
        self._engine: sa.Engine | None = None
        self._client: Redis | None = None
        self._side: PolicyRedis | None = None
        self._sync: PolicySync | None = None
        self._closed = False
        self._listeners: list[Callable[[Change], None]] = []

    # -- lifecycle ------------------------------------------------------------------

    def init(self) -> PolicyStore:
        """Upgrade the schema, load the policy, align Redis, and start following changes."""
        if self._closed:
            raise NotInitializedError("PolicyStore is closed")
        if self._sync is not None:
            return self
        engine = database_engine(self._database_source)
        with _database_errors("loading the federation policy"):
            migrate.upgrade(engine)
            snapshot = db.load_snapshot(engine)
        self.state.replace(snapshot)
        client = redis_client(self._redis_source)
        side = PolicyRedis(client, self.keys)
        try:
            rebuilt = rebuild_redis(engine, side)
            self.state.replace(rebuilt)
        except RedisError as exc:
            log.warning("Redis unavailable at start (%s); serving rules from the database", exc)
        self._engine, self._client, self._side = engine, client, side
        self._sync = PolicySync(
            self.state, side, engine, interval=self._resync_interval, listeners=self._listeners
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
        if self._client is not None:
            self._client.close()
        if self._engine is not None and not isinstance(self._database_source, sa.Engine):
            self._engine.dispose()

    def __enter__(self) -> PolicyStore:
        return self.init()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads: process memory only ------------------------------------------------------

    def has_rule(self, domain: str) -> bool:
        """Whether a rule covers `domain` (False for an invalid name; never raises on I/O)."""
        state = self._ready_state()
        name = DEFAULT_MEMO.get(domain)
        return name is not None and name in state.rules

    def list_rules(self) -> dict[str, int]:
        """Every rule: domain → created_at (unix seconds)."""
        return dict(self._ready_state().rules)

    def count(self) -> int:
        return len(self._ready_state().rules)

    def get_policy(self) -> str:
        """``ACCEPT`` (rules are a blocklist) or ``REJECT`` (rules are an allowlist)."""
        return self._ready_state().policy

    def get_enabled(self) -> bool:
        """The cluster-wide federation switch; when off, only the local domain is allowed."""
        return self._ready_state().enabled

    def ping_database(self) -> bool:
        """Whether the database answers a trivial query now."""
        if self._engine is None:
            return False
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        """Call `listener(change)` from the sync thread after each change this process applies
        from another process (``op == "resync"`` after a full reload). Keep it quick."""
        self._listeners.append(listener)

    @property
    def version(self) -> int:
        """Version of the policy this process holds (increases with every change)."""
        return self.state.version

    # -- changes: database, then this cache, then Redis + channel ---------------------

    def add_rule(self, domain: str) -> int:
        """Add a rule (adding an existing one keeps its first created_at); return the total."""
        name = normalize_domain(domain)
        with self._transaction() as connection:
            version = db.bump_version(connection)
            created = db.add_rule(connection, name, int(time.time()))
            total = db.count_rules(connection)
        self._propagate(Change(version, "add", domain=name, created_at=created))
        return total

    def add_rules(self, domains: Iterable[str]) -> int:
        """Add many rules in one transaction; return how many were new.

        Every name is validated first (one `InvalidDomainError` and nothing changes). The
        cluster reloads the policy once (a ``resync``) instead of once per rule.
        """
        names = sorted({normalize_domain(domain) for domain in domains})
        with self._transaction() as connection:
            before = db.count_rules(connection)
            db.bump_version(connection)
            db.insert_rules(connection, names, int(time.time()))
            added = db.count_rules(connection) - before
        self._resync_everywhere()
        return added

    def remove_rule(self, domain: str) -> int:
        """Remove a rule (an unknown rule is not an error); return how many remain."""
        name = normalize_domain(domain)
        with self._transaction() as connection:
            version = db.bump_version(connection)
            db.remove_rule(connection, name)
            total = db.count_rules(connection)
        self._propagate(Change(version, "remove", domain=name))
        return total

    def flush_rules(self) -> None:
        """Remove every rule."""
        with self._transaction() as connection:
            version = db.bump_version(connection)
            db.flush_rules(connection)
        self._propagate(Change(version, "flush"))

    def set_policy(self, mode: str) -> None:
        """Set the cluster policy: ``ACCEPT`` or ``REJECT`` in any case."""
        policy = parse_policy(mode)
        with self._transaction() as connection:
            version = db.bump_version(connection)
            db.set_setting(connection, "policy", policy)
        self._propagate(Change(version, "policy", policy=policy))

    def set_enabled(self, enabled: bool) -> None:
        """Turn federation on or off for the whole cluster."""
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be a bool")
        with self._transaction() as connection:
            version = db.bump_version(connection)
            db.set_setting(connection, "enabled", "true" if enabled else "false")
        self._propagate(Change(version, "enabled", enabled=enabled))

    # -- internals ---------------------------------------------------------------------------

    def _ready_state(self) -> PolicyState:
        if not self.state.ready or self._closed:
            raise NotInitializedError("PolicyStore.init() has not been called (or it is closed)")
        return self.state

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        self._ready_state()
        assert self._engine is not None
        with _database_errors("changing the federation policy"), self._engine.begin() as connection:
            yield connection

    def _resync_everywhere(self) -> None:
        assert self._engine is not None and self._side is not None
        with _database_errors("reloading the federation policy"):
            snapshot = db.load_snapshot(self._engine)
        self.state.replace(snapshot)
        try:
            self._side.replace(snapshot)
        except RedisError as exc:
            raise PropagationPendingError(
                f"change committed (version {snapshot.version}) but Redis is unavailable ({exc});"
                " every process applies it once Redis is back"
            ) from exc

    def _propagate(self, change: Change) -> None:
        assert self._engine is not None and self._side is not None
        if self.state.apply(change) == "gap":  # we lagged: catch up from the database
            with _database_errors("reloading the federation policy"):
                self.state.replace(db.load_snapshot(self._engine))
        try:
            if self._side.apply(change) == -1:
                rebuild_redis(self._engine, self._side)
        except RedisError as exc:
            raise PropagationPendingError(
                f"change committed (version {change.version}) but Redis is unavailable ({exc});"
                " every process applies it once Redis is back"
            ) from exc


@contextlib.contextmanager
def _database_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise BackendUnavailableError(f"database unavailable while {action}: {exc.orig}") from exc
