"""SQL of the policy: rules and settings, each change under one version bump.

Every change runs in one transaction that first bumps the ``version`` row. The row lock
taken by that UPDATE serializes concurrent changes from every host, so versions are
gap-free and in commit order; Redis and the caches apply them only in that order.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..store.schema import federation_rules, federation_settings
from .state import ACCEPT, Snapshot

_settings = federation_settings.c
_rules = federation_rules.c


def dialect_insert(connection: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that knows ``ON CONFLICT`` for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def bump_version(connection: sa.Connection) -> int:
    """Increment and return the policy version (locks the row until commit)."""
    statement = (
        sa.update(federation_settings)
        .where(_settings.key == "version")
        .values(value=sa.cast(sa.cast(_settings.value, sa.BigInteger) + 1, sa.Text))
        .returning(_settings.value)
    )
    value = connection.execute(statement).scalar_one_or_none()
    if value is None:  # a database whose version row was deleted by hand
        connection.execute(sa.insert(federation_settings).values(key="version", value="1"))
        return 1
    return int(value)


def insert_rules(connection: sa.Connection, domains: list[str], now: int) -> None:
    """Insert rules that are not there yet (existing ones keep their created_at)."""
    if not domains:
        return
    insert = dialect_insert(connection, federation_rules).on_conflict_do_nothing(
        index_elements=["domain"]
    )
    connection.execute(insert, [{"domain": domain, "created_at": now} for domain in domains])


def add_rule(connection: sa.Connection, domain: str, now: int) -> int:
    """Insert a rule unless present; return its (first) created_at."""
    insert_rules(connection, [domain], now)
    created = connection.execute(
        sa.select(_rules.created_at).where(_rules.domain == domain)
    ).scalar_one()
    return int(created)


def remove_rule(connection: sa.Connection, domain: str) -> None:
    connection.execute(sa.delete(federation_rules).where(_rules.domain == domain))


def flush_rules(connection: sa.Connection) -> None:
    connection.execute(sa.delete(federation_rules))


def count_rules(connection: sa.Connection) -> int:
    return int(
        connection.execute(sa.select(sa.func.count()).select_from(federation_rules)).scalar_one()
    )


def set_setting(connection: sa.Connection, key: str, value: str) -> None:
    insert = dialect_insert(connection, federation_settings)
    connection.execute(
        insert.values(key=key, value=value).on_conflict_do_update(
            index_elements=["key"], set_={"value": value}
        )
    )


def read_version(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        value = connection.execute(
            sa.select(_settings.value).where(_settings.key == "version")
        ).scalar_one_or_none()
    return int(value) if value is not None else 0


def load_snapshot(engine: sa.Engine) -> Snapshot:
    """Every rule and setting at one version (the version row is share-locked while read)."""
    with engine.begin() as connection:
        version_query = sa.select(_settings.value).where(_settings.key == "version")
        if connection.dialect.name == "postgresql":
            version_query = version_query.with_for_update(read=True)
        version = connection.execute(version_query).scalar_one_or_none()
        settings = {
            str(key): str(value)
            for key, value in connection.execute(sa.select(_settings.key, _settings.value))
        }
        rules = {
            str(domain): int(created)
            for domain, created in connection.execute(sa.select(_rules.domain, _rules.created_at))
        }
    return Snapshot(
        version=int(version or 0),
        policy=settings.get("policy", ACCEPT),
        enabled=settings.get("enabled", "true") == "true",
        rules=rules,
    )
