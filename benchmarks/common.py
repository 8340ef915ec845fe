"""Shared helpers of the benchmarks: where Redis and PostgreSQL are, and scratch databases."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import uuid
from collections.abc import Iterator, Sequence

import psycopg
import redis
import sqlalchemy as sa

REDIS_URL = os.environ.get("FEDTRACK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "FEDTRACK_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def scratch_namespace() -> str:
    return "bench" + uuid.uuid4().hex[:10]


def delete_namespace(namespace: str, url: str = REDIS_URL) -> None:
    client = redis.Redis.from_url(url)
    with contextlib.closing(client):
        for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=1000):
            client.delete(key)


def _libpq(url: sa.URL) -> str:
    return (
        f"host={url.host or '127.0.0.1'} port={url.port or 5432} "
        f"user={url.username or 'postgres'} dbname={url.database or 'postgres'}"
        + (f" password={url.password}" if url.password else "")
    )


@contextlib.contextmanager
def scratch_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A new PostgreSQL database for one benchmark, dropped afterwards."""
    name = "fedtrack_bench_" + uuid.uuid4().hex[:10]
    admin = sa.make_url(admin_url)
    with psycopg.connect(_libpq(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
