"""store/search.py on PostgreSQL and SQLite: the name filter (a prefix, or a domain and
its subdomains on label boundaries) sorted and paged by the database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from fedtrack_redis.errors import ConfigurationError
from fedtrack_redis.store import migrate
from fedtrack_redis.store.search import ORDERS, count_domains, find_domains
from flusher_helpers import engine, make_engine, write_rows

__all__ = ["engine"]


def row(**counters: int) -> dict[str, Any]:
    from fedtrack_redis.store.schema import COUNTER_COLUMNS

    values: dict[str, Any] = {name: 0 for name in COUNTER_COLUMNS}
    values.update(counters)
    values.setdefault("histogram", {})
    return values


ROWS = {
    "example.org": row(failed_smtp=1, last_active=1_700_000_050),
    "mail.example.org": row(
        failed_http=5, successful_deliveries=2, total_latency_ms=900, last_active=1_700_000_100
    ),
    "a.b.example.org": row(queued_messages=7, successful_deliveries=4, total_latency_ms=400),
    "badexample.org": row(failed_https=9, last_active=1_700_000_200),
    "mail.other.net": row(successful_deliveries=1, total_latency_ms=50, last_active=1_700_000_000),
    "mailbox.net": row(queued_messages=2, last_active=1_700_000_300),
}


@pytest.fixture
def stored(engine: sa.Engine) -> sa.Engine:
    write_rows(engine, ROWS)
    return engine


def test_a_prefix_and_a_label_suffix_match_what_operators_type(stored: sa.Engine) -> None:
    assert find_domains(stored, "mail", 10) == ["mail.example.org", "mail.other.net", "mailbox.net"]
    assert find_domains(stored, "mail.", 10) == ["mail.example.org", "mail.other.net"]
    # the domain and everything under it, never a name that merely ends the same
    assert find_domains(stored, "example.org", 10) == [
        "a.b.example.org",
        "example.org",
        "mail.example.org",
    ]
    assert count_domains(stored, "example.org", cap=10) == 3
    assert count_domains(stored, "", cap=4) == 4  # counted at most to the cap
    assert find_domains(stored, "", 2, offset=1) == ["badexample.org", "example.org"]


def test_the_database_sorts_and_pages_the_matches(stored: sa.Engine) -> None:
    def ordered(order: str, text: str = "", limit: int = 10, offset: int = 0) -> list[str]:
        return find_domains(stored, text, limit, offset, order)

    assert ordered("failures") == [
        "badexample.org",
        "mail.example.org",
        "example.org",
        "a.b.example.org",
        "mail.other.net",
        "mailbox.net",
    ]
    # mean latency over every success: 450, 100, 50 ms; no success sorts as 0, by name
    assert ordered("latency", "")[:4] == [
        "mail.example.org",
        "a.b.example.org",
        "mail.other.net",
        "badexample.org",
    ]
    assert ordered("queued", "", limit=2) == ["a.b.example.org", "mailbox.net"]
    # newest first; a domain never active last
    assert ordered("activity", "example.org") == [
        "mail.example.org",
        "example.org",
        "a.b.example.org",
    ]
    assert ordered("failures", "example.org", limit=1, offset=1) == ["example.org"]
    assert set(ORDERS) == {"domain", "activity", "failures", "latency", "queued"}


@pytest.mark.parametrize("text", ["mail%", "MAIL_", "a b", "x" * 254])
def test_a_filter_outside_the_name_alphabet_is_refused(stored: sa.Engine, text: str) -> None:
    with pytest.raises(ConfigurationError, match="a-z 0-9"):
        find_domains(stored, text, 10)


def test_ties_are_in_byte_order_whatever_the_database_collation(
    postgres_admin_url: str,
) -> None:
    """A database whose collation orders ``:`` before ``.`` (ICU's en-US) still breaks
    ties as Redis does, so a page is the same from either."""
    name = "fedtrack_test_icu_" + uuid.uuid4().hex[:8]
    admin = sa.make_url(postgres_admin_url)
    admin_engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(
            sa.text(
                f'CREATE DATABASE "{name}" TEMPLATE template0'
                " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        )
    url = admin.set(database=name)
    try:
        with make_engine(url.render_as_string(hide_password=False)) as icu:
            migrate.upgrade(icu)
            with icu.connect() as connection:
                assert connection.scalar(sa.text("SELECT 'a:b' < 'a.b'"))  # the collation's
            write_rows(icu, {"a.b.example": row(last_active=5), "a:b.example": row(last_active=5)})
            assert find_domains(icu, "a", 10, order="activity") == ["a.b.example", "a:b.example"]
    finally:
        with admin_engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()
