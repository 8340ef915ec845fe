"""Find domains by name in the database's copy of the stats, through an index.

Redis keeps no name index (it would cost more memory per domain than the domain's own
counters); the flusher writes every domain to ``federation_server_stats`` within a flush
interval, and its primary key (and, on PostgreSQL, the pattern indexes of migration 0005
when present) answer the two matches operators type: a *prefix* of the name (``mail.`` →
``mail.example.org``) and a *label suffix* (``example.org`` → ``example.org``,
``a.b.example.org``, not ``badexample.org``). Names only hold ``a-z 0-9 . - :``, so they are
used in LIKE patterns without escaping.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from ..errors import ConfigurationError
from .schema import federation_server_stats

_NAME_PART = re.compile(r"^[a-z0-9.:-]{1,253}$")
_domain = federation_server_stats.c.domain


def name_filter(text: str) -> str:
    """The search text, lowercased; `ConfigurationError` (a 4xx) for other characters."""
    value = text.strip().lower()
    if not _NAME_PART.match(value):
        raise ConfigurationError(
            "a name filter holds 1-253 characters from a-z 0-9 . - : (a prefix of a name,"
            " or a domain whose subdomains to list)"
        )
    return value


def find_domains(engine: sa.Engine, text: str, limit: int, offset: int = 0) -> list[str]:
    """Domains (sorted by name) that start with `text` or lie at or under the domain
    `text` on label boundaries; all domains when `text` is empty."""
    query = sa.select(_domain)
    if text:
        value = name_filter(text)
        under = _under(engine, value)
        query = query.where(sa.or_(_domain.like(f"{value}%"), _domain == value, under))
    query = query.order_by(_domain).offset(offset).limit(limit)
    with engine.connect() as connection:
        return [str(name) for name in connection.execute(query).scalars()]


def count_domains(engine: sa.Engine, text: str, cap: int) -> int:
    """How many domains `find_domains` would list, counting at most `cap`."""
    inner = sa.select(_domain)
    if text:
        value = name_filter(text)
        inner = inner.where(
            sa.or_(_domain.like(f"{value}%"), _domain == value, _under(engine, value))
        )
    counted = sa.select(sa.func.count()).select_from(inner.limit(cap).subquery())
    with engine.connect() as connection:
        return int(connection.execute(counted).scalar_one())


def _under(engine: sa.Engine, value: str) -> sa.ColumnElement[bool]:
    if engine.dialect.name == "postgresql":
        # reverse(domain) LIKE reverse('.' || value) || '%': the reverse-pattern index
        return sa.func.reverse(_domain).like(f".{value}"[::-1] + "%")
    return _domain.like(f"%.{value}")
