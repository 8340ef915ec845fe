"""`PolicyStore`: the cluster's federation policy, changed through the database.

A change checks that this process's database is the namespace's (G11), commits to the
database under a new version with its audit entry in the same transaction, is applied
to this process's view, then to Redis by a script that also publishes it, all before the
call returns (`PolicyWriter`). Every process's `PolicySync` applies it to its own view.
Reads (`has_rule`, `rules`, `list_rules`, `count`, `get_policy`) only touch process
memory; `audit` reads the database.

A store holds no database connection while it only follows the policy: `init()` reads
the policy from Redis (the database only when Redis has none, and once for the schema
check), and a change opens a connection for its own transaction (no pool on PostgreSQL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from ..connections import database_engine
from ..domain import DEFAULT_MEMO
from ..engine import RedisEngine
from ..errors import BackendUnavailableError, InvalidRuleError, NotInitializedError
from ..identity import IdentityGuard, read_database_id
from ..keys import NamespaceKeys
from ..store import migrate
from . import audit, changes, db
from .audit import AuditEntry, check_actor
from .edits import DEFAULT_EFFECT, DEFAULT_SOURCE, DEFAULT_TEXT, NOT_GIVEN, RuleEdit
from .expiry import ExpiryClock
from .formats import InvalidEntry
from .imports import ImportReport
from .rules import Rule, make_rule, parse_rule
from .state import Change, PolicyState, PolicyView, parse_policy
from .sync import PolicyRedis, PolicySync
from .writer import PolicyWriter, database_errors, patiently

log = logging.getLogger("fedtrack_redis.policy")


class PolicyStore:
    """Federation policy (ACCEPT/REJECT), rules and the federation switch.

    ``database`` is a SQLAlchemy URL or Engine, ``redis`` a Redis URL (any engine) or
    client; the constructor does no I/O. Call `init()` once before use. ``database_id``
    (``FEDTRACK_DATABASE_ID``) pins the identity of the namespace's database. Every
    change takes ``actor=``, the audit log's name for who made it (default
    ``library:<host>``). A store keeps no database connection between uses, as a worker
    must (it only follows the policy); ``database_pool=True`` keeps a few open instead,
    for a process that makes changes (the admin API), so that a change does not pay for
    a new connection (a few milliseconds, a good part of a change's time before it
    propagates).
    """

    def __init__(
        self,
        database: str | sa.Engine,
        redis: str | redis.Redis | RedisCluster,
        *,
        namespace: str = "default",
        resync_interval: float = 1.0,
        database_id: str | None = None,
        database_pool: bool = False,
    ) -> None:
        self.keys = NamespaceKeys(namespace)
        self._database_pool = database_pool
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
        self._writer: PolicyWriter | None = None
        self._sync: PolicySync | None = None
        self._expiry = ExpiryClock(self.state)
        self._closed = False
        self._listeners: list[Callable[[Change], None]] = []

    def _set_view(self, view: PolicyView) -> None:
        self.view = view
        self._expiry.poke()

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
        with database_errors("checking the database schema"):
            patiently(lambda: _schema(database, migrate))
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
            with database_errors("loading the federation policy"):
                self.state.replace(patiently(lambda: db.load_snapshot(database)))
        self._redis = engine
        self._writer = PolicyWriter(database, side, self.guard, self.state)
        self._sync = PolicySync(
            self.state, side, self.guard, interval=self._resync_interval, listeners=self._listeners
        )
        self._sync.start()
        self._expiry.start()
        return self

    def close(self) -> None:
        """Stop following changes and release connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._expiry.close()
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

    def has_rule(self, text: str) -> bool:
        """Whether a rule with this text (any spelling `parse_rule` accepts) exists, expired
        or not. It says nothing of what matches a name: that is `check_federation_policy`'s
        and `explain_federation_policy`'s. False for an invalid text; never raises on I/O."""
        view = self._ready_view()
        canonical = _canonical(text)
        return canonical is not None and canonical in view.rules

    def get_rule(self, text: str) -> Rule | None:
        """The rule with this text, with every field (None when there is none)."""
        canonical = _canonical(text)
        return None if canonical is None else self._ready_view().rules.get(canonical)

    def rules(self) -> list[Rule]:
        """Every rule with every field, by text (expired ones until the leader removes them)."""
        return sorted(self._ready_view().rules.values(), key=lambda rule: rule.text)

    def list_rules(self) -> dict[str, int]:
        """Every rule: text → created_at (unix seconds)."""
        return {rule.text: rule.created_at for rule in self.rules()}

    def count(self) -> int:
        return len(self._ready_view().rules)

    def get_policy(self) -> str:
        """``ACCEPT`` (rules are a blocklist) or ``REJECT`` (rules are an allowlist)."""
        return self._ready_view().policy

    def get_enabled(self) -> bool:
        """The cluster-wide federation switch; when off, only the local domain is allowed."""
        return self._ready_view().enabled

    def audit(
        self,
        limit: int = 100,
        *,
        before_id: int | None = None,
        target: str | None = None,
        since: int | None = None,
    ) -> list[AuditEntry]:
        """The audit log, newest first: at most `limit` (1 to 1,000) entries, strictly
        older than `before_id` (to page), of one `target` (a rule text in any spelling,
        ``policy``, ``enabled``, ``*``, an import's name), at or after `since` (unix s).
        Reads the database."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError("limit must be an integer from 1 to 1000")
        self._ready_view()
        targets = None if target is None else sorted({target, _canonical(target) or target})
        with (
            database_errors("reading the audit log"),
            self._database_engine().connect() as connection,
        ):
            return audit.read(connection, limit, before_id=before_id, targets=targets, since=since)

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

    # -- changes: database (+ audit), then this view, then Redis + channel --------------

    def add_rule(
        self,
        text: str,
        *,
        effect: str = DEFAULT_EFFECT,
        reason: str = DEFAULT_TEXT,
        private_comment: str = DEFAULT_TEXT,
        created_by: str | None = NOT_GIVEN,
        expires_at: int | None = NOT_GIVEN,
        source: str = DEFAULT_SOURCE,
        actor: str | None = None,
    ) -> int:
        """Add a rule, or change the fields passed of the rule with this text; return how
        many rules there are.

        A new rule is created now, by `created_by` (default: the actor). Re-adding keeps
        `created_at`, changes only the fields passed, and sets `updated_at`; a call that
        changes nothing writes nothing. `expires_at` (unix seconds) must be in the future;
        pass ``expires_at=None`` to make a rule permanent again. Raises `InvalidRuleError`
        (an `InvalidDomainError`) for a bad text or field, before anything changes.
        """
        edit = RuleEdit.of(
            text,
            time.time(),
            effect=effect,
            reason=reason,
            private_comment=private_comment,
            created_by=created_by,
            expires_at=expires_at,
            source=source,
        )
        self._write().run(changes.add(edit, check_actor(actor)))
        return self.count()  # this process's view holds the change now

    def remove_rule(self, text: str, *, actor: str | None = None) -> int:
        """Remove the rule with this text (an unknown rule is not an error, and writes
        nothing); return how many remain."""
        canonical = parse_rule(text).text
        self._write().run(changes.remove(canonical, check_actor(actor)))
        return self.count()

    def flush_rules(self, *, actor: str | None = None) -> None:
        """Remove every rule (one audit entry, target ``*``)."""
        self._write().run(changes.flush(check_actor(actor)))

    def add_rules(self, texts: Iterable[str], *, actor: str | None = None) -> int:
        """Add many rules of any kind in one transaction (one audit entry, target
        ``add_rules``); return how many were new. Existing rules are left as they are.

        Every text is validated first (one `InvalidDomainError` and nothing changes).
        """
        rules = [make_rule(text) for text in texts]
        report = self.import_rules(rules, fields=(), format="text", target="add_rules", actor=actor)
        return len(report.added)

    def import_rules(
        self,
        rules: Iterable[Rule],
        *,
        fields: Collection[str] | None = None,
        format: str = "fedtrack-json",
        target: str = "import",
        invalid: Sequence[InvalidEntry] = (),
        dry_run: bool = False,
        actor: str | None = None,
    ) -> ImportReport:
        """Merge `rules` into the stored ones in ONE transaction with ONE audit entry
        (action ``import``, `target` the file's name).

        A new text is added; a stored rule gets the `fields` of its incoming rule (None:
        every field, a restore) and is skipped when nothing differs. The cluster hears
        one message, or one resync above 1,000 changed rules. `dry_run` computes the same
        report and changes nothing; so does an import that changes nothing.
        """
        unique = list({rule.text: rule for rule in rules}.values())
        work = changes.merge(
            unique,
            fields,
            fmt=format,
            target=target,
            invalid=invalid,
            dry_run=dry_run,
            actor=check_actor(actor),
        )
        return self._write().run(work)

    def set_policy(self, mode: str, *, actor: str | None = None) -> None:
        """Set the cluster policy: ``ACCEPT`` or ``REJECT`` in any case."""
        policy = parse_policy(mode)
        self._write().run(changes.set_policy(policy, check_actor(actor)))

    def set_enabled(self, enabled: bool, *, actor: str | None = None) -> None:
        """Turn federation on or off for the whole cluster."""
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be a bool")
        self._write().run(changes.set_enabled(enabled, check_actor(actor)))

    # -- internals ---------------------------------------------------------------------------

    def _ready_view(self) -> PolicyView:
        view = self.view
        if not view.ready or self._closed:
            raise NotInitializedError("PolicyStore.init() has not been called (or it is closed)")
        return view

    def _write(self) -> PolicyWriter:
        self._ready_view()
        assert self._writer is not None
        return self._writer

    def audit_database(self) -> sa.Engine:
        """The database holding the audit log, for changes made elsewhere than here
        (a delivery health reset) to be audited in the same log."""
        return self._database_engine()

    def _database_engine(self) -> sa.Engine:
        if self._database is None:
            self._database = database_engine(self._database_source, pooled=self._database_pool)
        return self._database


def _canonical(text: str) -> str | None:
    """The canonical text of a rule, or None (never raises): a name through the memo."""
    name = DEFAULT_MEMO.get(text)
    if name is not None:
        return name
    try:
        return parse_rule(text).text
    except InvalidRuleError:
        return None


def _schema(database: sa.Engine, upgrade: bool) -> None:
    if upgrade:
        migrate.upgrade(database)
    else:
        migrate.check(database)
