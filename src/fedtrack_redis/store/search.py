"""Find domains by name in the database's copy of the stats, through an index.

Redis keeps no name index (it would cost more memory per domain than the domain's own
counters); the flusher writes every domain to ``federation_server_stats`` within a flush
interval, and its primary key (and, on PostgreSQL, the pattern indexes of migration 0005
when present) answer the two matches operators type: a *prefix* of the name (``mail.`` →
``mail.example.org``) and a *label suffix* (``example.org`` → ``example.org``,
``a.b.example.org``, not ``badexample.org``). Names only hold ``a-z 0-9 . - :``, so they are
used in LIKE patterns without escaping.

Sorting the matches reads every matching row. The flusher inserts new rows in name order
(`stats.upsert_stats`), so a prefix's rows lie together as far as they arrived together;
a label suffix's never do. A broad filter is therefore paged from its order's index in
Redis (`reads.StatsReader.search`); at a million domains a suffix matching 77,000 of
them took 195 ms here to sort by activity, against 6 ms from the index.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigurationError
from .schema import federation_server_stats

_NAME_PART = re.compile(r"^[a-z0-9.:-]{1,253}$")
_stats = federation_server_stats.c
_domain = _stats.domain
#: The API's sorts over the database's copy, before the name that breaks ties (in byte
#: order, as Redis orders names: `find_domains`); mean latency over every success,
#: inbound included, no success sorting as 0.
ORDERS: dict[str, tuple[sa.ColumnElement[Any], ...]] = {
    "domain": (),
    "activity": (_stats.last_active.desc().nulls_last(),),
    "failures": ((_stats.failed_http + _stats.failed_https + _stats.failed_smtp).desc(),),
    "latency": (
        sa.func.coalesce(
            sa.cast(_stats.total_latency_ms, sa.Float)
            / sa.func.nullif(_stats.successful_deliveries, 0),
            0.0,
        ).desc(),
    ),
    "queued": (_stats.queued_messages.desc(),),
}


def name_filter(text: str) -> str:
    """The search text, lowercased; `ConfigurationError` (a 4xx) for other characters."""
    value = text.strip().lower()
    if not _NAME_PART.match(value):
        raise ConfigurationError(
            "a name filter holds 1-253 characters from a-z 0-9 . - : (a prefix of a name,"
            " or a domain whose subdomains to list)"
        )
    return value


def matches(name: str, value: str) -> bool:
    """Whether `find_domains` lists `name` for the (validated) filter `value`: it starts
    with `value`, or lies under the domain `value` on a label boundary."""
    return name.startswith(value) or name.endswith("." + value)


def find_domains(
    engine: sa.Engine, text: str, limit: int, offset: int = 0, order: str = "domain"
) -> list[str]:
    """One page of the domains that start with `text` or lie at or under the domain
    `text` on label boundaries (all domains when `text` is empty), in `order` (a key of
    `ORDERS`) by the database's copy: the database sorts and pages, so a broad filter at
    a million domains reads one page, never every match."""
    query = (
        _matching(engine, text)
        .order_by(*ORDERS[order], _by_name(engine, order))
        .offset(offset)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [str(name) for name in connection.execute(query).scalars()]


def count_domains(engine: sa.Engine, text: str, cap: int) -> int:
    """How many domains `find_domains` would list, counting at most `cap`."""
    inner = _matching(engine, text).limit(cap).subquery()
    counted = sa.select(sa.func.count()).select_from(inner)
    with engine.connect() as connection:
        return int(connection.execute(counted).scalar_one())


def _matching(engine: sa.Engine, text: str) -> sa.Select[tuple[str]]:
    """The names `matches` accepts for `text` (every name when it is empty), in SQL."""
    query = sa.select(_domain)
    if not text:
        return query
    value = name_filter(text)
    return query.where(sa.or_(_domain.like(f"{value}%"), _domain == value, _under(engine, value)))


def _by_name(engine: sa.Engine, order: str) -> sa.ColumnElement[Any]:
    """The name as the last sort key. Ties are broken in byte order (``COLLATE "C"`` on
    PostgreSQL, whatever the database's collation; SQLite's default), as the pages read
    from Redis break them, so a page is the same whichever of the two answers it. Sorting
    by name alone keeps the column's collation, which its primary key index serves."""
    if order != "domain" and engine.dialect.name == "postgresql":
        return _domain.collate("C")
    return _domain


def _under(engine: sa.Engine, value: str) -> sa.ColumnElement[bool]:
    if engine.dialect.name == "postgresql":
        # reverse(domain) LIKE reverse('.' || value) || '%': the reverse-pattern index
        return sa.func.reverse(_domain).like(f".{value}"[::-1] + "%")
    return _domain.like(f"%.{value}")
