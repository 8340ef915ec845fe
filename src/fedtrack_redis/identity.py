"""G11, the right database: which database a namespace's Redis data came from.

Each database has an identity, a random 32-hex id created with its tables
(`federation_identity`). Redis records it as the value of every shard's ``hydrated``
marker and as ``database_id`` in the policy meta hash. Every process part that writes to
the database or rebuilds Redis from it (hydrate, flusher, policy changes) checks, first,
that its database is the one Redis names, through an `IdentityGuard`:

* the expected identity is ``FEDTRACK_DATABASE_ID`` when set (``pinned``), else the
  first one this guard saw in Redis, remembered for the process's lifetime, so a process
  still refuses another database after Redis lost everything;
* any identity Redis holds (a surviving marker, the policy keys) must equal the database's;
* with nothing pinned, nothing remembered and nothing in Redis, the first hydration
  decides (and ``fedtrack db rehydrate`` repairs a wrong decision).

Markers written before identities existed hold a timestamp instead: they are *legacy*,
name no database, and the flusher leader adopts them once (rewrites them with its id).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import sqlalchemy as sa

from .errors import ConfigurationError, DatabaseMismatchError
from .redact import redact_url
from .store.schema import federation_identity

_ID = re.compile(r"^[0-9a-f]{32}$")


def is_identity(value: object) -> bool:
    """Whether `value` is a database identity (legacy markers and absent ones are not)."""
    return isinstance(value, str) and bool(_ID.match(value))


def validate_identity(value: str, name: str = "FEDTRACK_DATABASE_ID") -> str:
    """`value` normalized to lower case, or `ConfigurationError` naming `name`."""
    text = value.strip().lower()
    if not is_identity(text):
        raise ConfigurationError(f"{name}: expected a database id of 32 hex digits, got {value!r}")
    return text


def read_database_id(connection: sa.Connection) -> str:
    """The identity of the database behind `connection` (created by the migrations)."""
    value = connection.execute(
        sa.select(federation_identity.c.database_id).where(federation_identity.c.id == 1)
    ).scalar_one_or_none()
    if value is None or not is_identity(str(value)):
        raise ConfigurationError(
            "the database has no identity row (federation_identity): run `fedtrack db upgrade`"
        )
    return str(value)


def database_id(engine: sa.Engine) -> str:
    """`read_database_id` on a connection of its own."""
    with engine.connect() as connection:
        return read_database_id(connection)


class IdentityGuard:
    """What one process part knows of the identity it must work with (thread-safe)."""

    def __init__(
        self, namespace: str, *, pinned: str | None = None, database_url: str = ""
    ) -> None:
        self.namespace = namespace
        self.pinned = validate_identity(pinned) if pinned else None
        self._database_url = redact_url(database_url)
        self._remembered: str | None = None
        self._lock = threading.Lock()

    @property
    def remembered(self) -> str | None:
        """The first identity this guard saw in Redis (or adopted by hydrating)."""
        return self._remembered

    @property
    def expected(self) -> str | None:
        """The pinned identity, else the remembered one, else None (anything goes)."""
        return self.pinned or self._remembered

    def observe(self, identities: Iterable[object]) -> None:
        """Remember the first real identity among those just read in Redis."""
        with self._lock:
            if self._remembered is not None:
                return
            for value in identities:
                if is_identity(value):
                    self._remembered = str(value)
                    return

    def adopt(self, identity: str) -> None:
        """Remember `identity` if nothing is remembered yet (after writing it to Redis)."""
        self.observe([identity])

    def check(self, database: str, in_redis: Iterable[object] = ()) -> None:
        """Raise `DatabaseMismatchError` unless `database` may be used with this Redis.

        `in_redis` holds what Redis names now (marker values, the policy's identity);
        legacy and absent values are ignored. The first identity found in Redis is
        remembered whether it matches or not, so a process that once saw the namespace's
        database refuses another one even after Redis lost everything.
        """
        named = sorted({str(v) for v in in_redis if is_identity(v)})
        self.observe(named)
        expected = self.expected
        if expected is not None and expected != database:
            source = "FEDTRACK_DATABASE_ID" if self.pinned else "this process first saw in Redis"
            raise self._error(
                expected, database, f"the namespace's data is of database {expected} ({source})"
            )
        for other in named:
            if other != database:
                raise self._error(other, database, f"Redis holds data of database {other}")

    def _error(self, expected: str, actual: str, why: str) -> DatabaseMismatchError:
        where = f" ({self._database_url})" if self._database_url else ""
        return DatabaseMismatchError(
            f"database mismatch in namespace {self.namespace!r}: {why}, but this process's"
            f" database{where} is {actual}; point it at the right database or rebuild Redis"
            " from this one with `fedtrack db rehydrate`",
            expected=expected,
            actual=actual,
        )
