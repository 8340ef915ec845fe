"""SQL of the policy: rules and settings, each change under one version bump.

Every change runs in one transaction that first bumps the ``version`` row. The row lock
taken by that UPDATE serializes concurrent changes from every host, so versions are
gap-free and in commit order; Redis and the caches apply them only in that order. Every
transaction that changes rules takes that lock before it touches a rule row, the
leader's expiry included: one lock order, so no two changes can deadlock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..store.schema import federation_rules, federation_settings
from .rules import Rule
from .state import ACCEPT, Snapshot

_settings = federation_settings.c
_rules = federation_rules.c
_COLUMNS = (
    _rules.domain,
    _rules.kind,
    _rules.effect,
    _rules.reason,
    _rules.private_comment,
    _rules.created_by,
    _rules.source,
    _rules.created_at,
    _rules.updated_at,
    _rules.expires_at,
)
#: Texts per ``IN (…)`` list: well under SQLite's limit of bound parameters.
IN_BATCH = 500
#: Above this many rows PostgreSQL gets them by COPY (psycopg's executemany sends one
#: statement per row).
COPY_ABOVE = 100
_FIELDS = (
    "domain",
    "kind",
    "effect",
    "reason",
    "private_comment",
    "created_by",
    "source",
    "created_at",
    "updated_at",
    "expires_at",
)
_STAGE = "fedtrack_rules_stage"
_STAGE_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (domain text PRIMARY KEY, kind text,"
    " effect text, reason text, private_comment text, created_by text, source text,"
    " created_at bigint, updated_at bigint, expires_at bigint) ON COMMIT DROP"
)
_STAGE_UPDATE = (
    "UPDATE federation_rules AS r SET "
    + ", ".join(f"{name} = s.{name}" for name in _FIELDS if name != "domain")
    + f" FROM {_STAGE} AS s WHERE r.domain = s.domain"
)


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


def _rule(row: Sequence[Any]) -> Rule:
    text, kind, effect, reason, comment, created_by, source, created, updated, expires = row
    return Rule(
        str(text),
        str(kind),
        str(effect),
        str(reason or ""),
        str(comment or ""),
        None if created_by is None else str(created_by),
        str(source),
        int(created),
        None if updated is None else int(updated),
        None if expires is None else int(expires),
    )


def _values(rule: Rule) -> dict[str, Any]:
    """A rule as table columns in `_FIELDS` order (COPY relies on it); the table names
    its text ``domain``."""
    values = {**dataclasses.asdict(rule), "domain": rule.text}
    return {name: values[name] for name in _FIELDS}


def get_rules(connection: sa.Connection, texts: Iterable[str]) -> dict[str, Rule]:
    """The stored rules among `texts`, by text."""
    wanted = list(dict.fromkeys(texts))
    found: dict[str, Rule] = {}
    for start in range(0, len(wanted), IN_BATCH):
        chunk = wanted[start : start + IN_BATCH]
        for row in connection.execute(sa.select(*_COLUMNS).where(_rules.domain.in_(chunk))):
            rule = _rule(row)
            found[rule.text] = rule
    return found


def get_rule(connection: sa.Connection, text: str) -> Rule | None:
    return get_rules(connection, [text]).get(text)


def load_rules(connection: sa.Connection) -> dict[str, Rule]:
    """Every stored rule, by text."""
    return {rule.text: rule for rule in map(_rule, connection.execute(sa.select(*_COLUMNS)))}


def insert_rules(connection: sa.Connection, rules: Sequence[Rule]) -> None:
    """Insert new rules (their texts must not be stored yet)."""
    if len(rules) > COPY_ABOVE and connection.dialect.name == "postgresql":
        _copy(connection, "federation_rules", rules)
    elif rules:
        connection.execute(sa.insert(federation_rules), [_values(rule) for rule in rules])


def update_rules(connection: sa.Connection, rules: Sequence[Rule]) -> None:
    """Overwrite every field of stored rules, found by text."""
    if len(rules) > COPY_ABOVE and connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute(_STAGE_DDL)
        _copy(connection, _STAGE, rules)
        with driver.cursor() as cursor:
            cursor.execute(_STAGE_UPDATE)
        return
    if not rules:
        return
    statement = (
        sa.update(federation_rules)
        .where(_rules.domain == sa.bindparam("b_text"))
        .values({name: sa.bindparam(f"b_{name}") for name in _FIELDS if name != "domain"})
    )
    rows = [
        {f"b_{name}": value for name, value in _values(rule).items() if name != "domain"}
        | {"b_text": rule.text}
        for rule in rules
    ]
    connection.execute(statement, rows)


def _copy(connection: sa.Connection, table: str, rules: Sequence[Rule]) -> None:
    """COPY `rules` into `table` on the transaction's own connection (PostgreSQL): one
    stream instead of a statement per row, which is what makes a 100,000-rule import
    take seconds, not minutes."""
    driver = connection.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(_FIELDS)}) FROM STDIN") as copy,
    ):
        for rule in rules:
            copy.write_row(tuple(_values(rule).values()))


def save_rule(connection: sa.Connection, rule: Rule, *, new: bool) -> None:
    (insert_rules if new else update_rules)(connection, [rule])


def remove_rule(connection: sa.Connection, text: str) -> None:
    connection.execute(sa.delete(federation_rules).where(_rules.domain == text))


def flush_rules(connection: sa.Connection) -> list[str]:
    """Remove every rule; return their texts, sorted."""
    texts = sorted(str(t) for t in connection.execute(sa.select(_rules.domain)).scalars())
    connection.execute(sa.delete(federation_rules))
    return texts


def any_expired(connection: sa.Connection, now: int) -> bool:
    """Whether some rule has expired by `now` (an index lookup, no lock taken)."""
    query = sa.select(_rules.id).where(_rules.expires_at <= now).limit(1)
    return connection.execute(query).first() is not None


def take_expired(connection: sa.Connection, now: int, limit: int) -> list[Rule]:
    """Delete up to `limit` rules expired by `now` and return them (call after
    `bump_version`, as every rule change does)."""
    query = (
        sa.select(*_COLUMNS)
        .where(_rules.expires_at <= now)
        .order_by(_rules.expires_at, _rules.domain)
        .limit(limit)
    )
    rules = [_rule(row) for row in connection.execute(query)]
    texts = [rule.text for rule in rules]
    for start in range(0, len(texts), IN_BATCH):
        chunk = texts[start : start + IN_BATCH]
        connection.execute(sa.delete(federation_rules).where(_rules.domain.in_(chunk)))
    return rules


def count_rules(connection: sa.Connection) -> int:
    return int(
        connection.execute(sa.select(sa.func.count()).select_from(federation_rules)).scalar_one()
    )


def get_setting(connection: sa.Connection, key: str) -> str | None:
    value = connection.execute(
        sa.select(_settings.value).where(_settings.key == key)
    ).scalar_one_or_none()
    return None if value is None else str(value)


def set_setting(connection: sa.Connection, key: str, value: str) -> None:
    insert = dialect_insert(connection, federation_settings)
    connection.execute(
        insert.values(key=key, value=value).on_conflict_do_update(
            index_elements=["key"], set_={"value": value}
        )
    )


def read_version(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        value = get_setting(connection, "version")
    return int(value) if value is not None else 0


def snapshot_of(version: int, settings: Mapping[str, str], rules: Mapping[str, Rule]) -> Snapshot:
    return Snapshot(
        version=version,
        policy=settings.get("policy", ACCEPT),
        enabled=settings.get("enabled", "true") == "true",
        rules=rules,
    )


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
        rules = load_rules(connection)
    return snapshot_of(int(version or 0), settings, rules)
