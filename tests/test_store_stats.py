"""store/stats.py: stats lines, the histogram column, UPSERTs, acks, the fencing token."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from fedtrack_redis.errors import FencedOutError
from fedtrack_redis.store import stats
from fedtrack_redis.store.schema import COUNTER_COLUMNS
from flusher_helpers import db_acks, db_stats, engine, make_rows, pg_engine, write_rows

__all__ = ["engine", "pg_engine"]


@given(st.dictionaries(st.integers(0, 100), st.integers(0, 10**12)))
def test_histogram_round_trip(buckets: dict[int, int]) -> None:
    text = stats.encode_histogram(buckets)
    assert stats.decode_histogram(text) == {b: c for b, c in buckets.items() if c}
    assert "\t" not in text and "\n" not in text
    assert [int(pair.split(":")[0]) for pair in text.split(",") if pair] == sorted(
        b for b, c in buckets.items() if c
    )


def test_histogram_format() -> None:
    assert stats.encode_histogram({17: 12, 0: 3, 5: 0}) == "0:3,17:12"
    assert stats.decode_histogram("") == {}


def test_line_round_trip() -> None:
    row = {name: index for index, name in enumerate(COUNTER_COLUMNS)}
    row.update(
        domain="a.example",
        last_active=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        latency_histogram="1:2",
    )
    line = stats.format_line(row)
    assert line.split("\t")[0] == "a.example"
    assert line.split("\t")[-2] == str(int(row["last_active"].timestamp()))
    assert stats.parse_line(line) == row
    naive = {**row, "last_active": dt.datetime(2026, 1, 2, 3, 4, 5)}
    assert stats.format_line(naive) == line
    unknown = stats.parse_line(stats.format_line({**row, "last_active": None}))
    assert unknown["last_active"] is None
    with pytest.raises(ValueError):
        stats.parse_line("a.example\t1")


def test_upsert_writes_absolute_values(engine: sa.Engine) -> None:
    rows = make_rows(30)
    write_rows(engine, rows)
    assert db_stats(engine) == rows
    changed = {
        domain: {**row, "failed_smtp": 99, "histogram": {3: 1}} for domain, row in rows.items()
    }
    write_rows(engine, dict(list(changed.items())[:10]))
    expected = {**rows, **dict(list(changed.items())[:10])}
    assert db_stats(engine) == expected


def test_copy_and_executemany_agree(pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "COPY_BATCH", 7)  # several COPY + INSERT rounds
    rows = make_rows(40)
    lines = [
        stats.format_line(
            {
                **row,
                "domain": domain,
                "last_active": dt.datetime.fromtimestamp(row["last_active"], dt.UTC),
                "latency_histogram": stats.encode_histogram(row["histogram"]),
            }
        )
        for domain, row in sorted(rows.items())
    ]
    with pg_engine.begin() as connection:
        assert stats.upsert_stats(connection, lines[:20], method="copy") == 20
        assert stats.upsert_stats(connection, lines[20:], method="executemany") == 20
    assert db_stats(pg_engine) == rows
    with pg_engine.begin() as connection:
        # Again, the other way round: updates of existing rows.
        stats.upsert_stats(connection, lines[:20], method="executemany")
        stats.upsert_stats(connection, lines[20:], method="copy")
        stats.upsert_stats(connection, lines, method="auto")
        assert stats.load_lines(connection) == sorted(lines)
    assert db_stats(pg_engine) == rows


def test_copy_needs_postgres(sqlite_url: str) -> None:
    created = sa.create_engine(sqlite_url)
    try:
        with created.begin() as connection, pytest.raises(ValueError):
            stats.upsert_stats(connection, ["x"], method="copy")
        with created.begin() as connection, pytest.raises(ValueError):
            stats.upsert_stats(connection, ["x"], method="bogus")
    finally:
        created.dispose()


def test_load_lines_sorted_by_domain(engine: sa.Engine) -> None:
    rows = make_rows(25)
    rows["a.example"] = {**rows["d1.example"], "last_active": 0}
    write_rows(engine, rows)
    with engine.connect() as connection:
        lines = stats.load_lines(connection)
    domains = [line.split("\t")[0] for line in lines]
    assert domains == sorted(rows)
    assert lines[0].split("\t")[-2] == stats.NULL
    assert {stats.parse_line(line)["domain"] for line in lines} == set(rows)


def test_acks_never_go_down_and_prune(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        stats.upsert_acks(connection, [(1, "w1", 5, 100), (1, "w2", 7, 100), (2, "w1", 1, 50)])
        stats.upsert_acks(connection, [(1, "w1", 3, 90), (1, "w2", 8, 300)])
    assert db_acks(engine) == {(1, "w1"): 5, (1, "w2"): 8, (2, "w1"): 1}
    with engine.begin() as connection:
        # w1 on shard 1 was last seen at 100 (90 does not move it back), w2 at 300
        assert stats.prune_acks(connection, 100) == 1  # (2, w1) seen at 50
        assert stats.load_acks(connection) == [(1, "w1", 5), (1, "w2", 8)]
        assert stats.prune_acks(connection, 301) == 2
        assert stats.upsert_acks(connection, []) == 0
    assert db_acks(engine) == {}


def test_pruning_seventy_thousand_workers_is_one_statement(engine: sa.Engine) -> None:
    """Worker ids churn: pruning never binds one parameter per worker (PostgreSQL refuses
    more than 65,535 parameters, SQLite 32,766)."""
    acks = [(3, f"worker-{index}", index, 1_000 + index % 2) for index in range(70_000)]
    with engine.begin() as connection:
        assert stats.upsert_acks(connection, acks) == 70_000
    with engine.begin() as connection:
        assert stats.prune_acks(connection, 1_001) == 35_000
    assert len(db_acks(engine)) == 35_000


def test_fencing_token(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        first = stats.bump_fence(connection)
        second = stats.bump_fence(connection)
        assert second == first + 1
        stats.check_fence(connection, second)
        with pytest.raises(FencedOutError):
            stats.check_fence(connection, first)
        assert stats.current_fence(connection) == second
    with engine.begin() as connection:  # the token row deleted by hand comes back
        connection.execute(sa.text("DELETE FROM federation_flusher"))
        assert stats.bump_fence(connection) == 1


def test_timeouts_are_local_to_the_transaction(pg_engine: sa.Engine) -> None:
    with pg_engine.begin() as connection:
        stats.set_timeouts(connection, 1.5)
        for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
            assert connection.exec_driver_sql(f"SHOW {name}").scalar() == "1500ms"
    with pg_engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
