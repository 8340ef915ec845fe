"""Bring a database to the current schema with the Alembic migrations shipped in the package.

Safe when many processes start at once: on PostgreSQL the upgrade runs under a
transaction-level advisory lock; on SQLite the database file lock serializes writers
and a lost race is retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from redis.backoff import ExponentialBackoff

from ..errors import BackendUnavailableError, SchemaMismatchError

log = logging.getLogger("fedtrack_redis.store")

#: Arbitrary, fixed key of the advisory lock that serializes migrations.
_ADVISORY_LOCK_KEY = 0x66747263  # "ftrc"
_upgraded: set[str] = set()
_upgraded_lock = threading.Lock()


def alembic_config(engine: sa.Engine | None = None) -> Config:
    """An Alembic config pointing at the migrations inside the installed package."""
    config = Config()
    location = resources.files("fedtrack_redis") / "store" / "migrations"
    config.set_main_option("script_location", str(location))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check(engine: sa.Engine) -> None:
    """Raise `SchemaMismatchError` (one line) unless the database is at this version's
    schema. Needs only SELECT: this is what workers and the API do at start."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None:
        raise SchemaMismatchError(
            f"the database has no fedtrack schema (this version needs revision {head}):"
            " run `fedtrack db upgrade`"
        )
    script = ScriptDirectory.from_config(alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    if current not in known:
        raise SchemaMismatchError(
            f"the database's schema revision {current} is newer than this version knows"
            f" (newest {head}): upgrade fedtrack-redis"
        )
    raise SchemaMismatchError(
        f"the database's schema is at revision {current}, this version needs {head}:"
        " run `fedtrack db upgrade`"
    )


def upgrade(engine: sa.Engine) -> None:
    """Apply every missing migration (idempotent; cheap once the database is current)."""
    key = engine.url.render_as_string(hide_password=True)
    with _upgraded_lock:  # one migration at a time in this process
        if key in _upgraded:
            return
        with _sqlite_file_lock(engine):
            _upgrade_with_retries(engine)
        _upgraded.add(key)


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    """Serialize migrations of one SQLite file across processes.

    pysqlite runs DDL outside the transaction, so two processes racing could leave tables
    created but the revision unstamped; an exclusive lock on a file beside the database
    makes the second one wait and then find the schema current.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _upgrade_with_retries(engine: sa.Engine) -> None:
    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    attempts = 6
    for attempt in range(attempts):
        try:
            _upgrade_once(engine)
            break
        except sa.exc.DBAPIError as exc:
            # PostgreSQL serializes migrations with an advisory lock; only SQLite can
            # lose a race (two processes creating the same table), so only it retries.
            if engine.dialect.name != "sqlite" or attempt == attempts - 1:
                raise BackendUnavailableError(
                    f"database migration failed ({type(exc.orig).__name__})"
                ) from exc
            log.warning("migration attempt %d failed (%s); retrying", attempt + 1, exc.orig)
            threading.Event().wait(backoff.compute(attempt))


def _upgrade_once(engine: sa.Engine) -> None:
    head = head_revision()
    if current_revision(engine) == head:
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY}
            )
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database schema upgraded to %s", head)
