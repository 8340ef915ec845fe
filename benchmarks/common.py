"""Shared helpers of the benchmarks: where Redis and PostgreSQL are, throwaway servers,
scratch namespaces and databases, and the facts about the machine a report starts with."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import redis
import sqlalchemy as sa

from fedtrack_redis.demo.services import redis_server

if TYPE_CHECKING:
    from benchmarks.report import Report

REDIS_URL = os.environ.get("FEDTRACK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "FEDTRACK_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Env:
    """Where one benchmark run talks to, and how big it is."""

    redis_url: str
    admin_url: str
    quick: bool
    #: True when `redis_url` is a throwaway server of this run (its memory and command
    #: statistics are then ours alone, and its namespace may be ``default``).
    own_redis: bool

    def namespace(self) -> str:
        """A namespace for one measurement (``default`` is used only on our own server)."""
        return scratch_namespace()


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
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"fedtrack:{{{namespace}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


def _libpq(url: sa.URL) -> str:
    return (
        f"host={url.host or '127.0.0.1'} port={url.port or 5432} "
        f"user={url.username or 'postgres'} dbname={url.database or 'postgres'}"
        + (f" password={url.password}" if url.password else "")
    )


@contextlib.contextmanager
def scratch_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A new PostgreSQL database for one benchmark, schema created (as ``fedtrack db
    upgrade`` does before anything runs), dropped afterwards."""
    from fedtrack_redis.connections import database_engine
    from fedtrack_redis.store import migrate

    name = "fedtrack_bench_" + uuid.uuid4().hex[:10]
    admin = sa.make_url(admin_url)
    with psycopg.connect(_libpq(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        engine = database_engine(url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        yield url
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- a throwaway redis-server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A ``redis-server`` with no persistence on a free port, for this run only."""
    with redis_server() as url:
        yield url


@contextlib.contextmanager
def bench_env(quick: bool, redis_url: str | None = None) -> Iterator[Env]:
    """The run's Redis (a throwaway server unless a URL is given) and PostgreSQL."""
    url = redis_url or os.environ.get("FEDTRACK_BENCH_REDIS_URL")
    if url:
        yield Env(url, POSTGRES_ADMIN_URL, quick, own_redis=False)
        return
    with throwaway_redis() as own:
        yield Env(own, POSTGRES_ADMIN_URL, quick, own_redis=True)


# -- timing helpers --------------------------------------------------------------------------


@contextlib.contextmanager
def server_calls(env: Env) -> Iterator[list[dict[str, Any]]]:
    """Every command's server time (SLOWLOG entries, ``duration`` in µs) while the block
    runs; our own Redis only (empty otherwise)."""
    entries: list[dict[str, Any]] = []
    if not env.own_redis:
        yield entries
        return
    client = redis.Redis.from_url(env.redis_url)
    old = client.config_get("slowlog-*")
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    try:
        yield entries
        entries.extend(client.slowlog_get(1_000_000))
    finally:
        for name, value in old.items():
            client.config_set(name, value)
        client.slowlog_reset()
        client.close()


def evalsha_usec(client: redis.Redis) -> tuple[int, int]:
    """(calls, total µs) of EVALSHA on the server so far (INFO commandstats; read-only)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


# -- machine and versions ------------------------------------------------------------------


def machine_facts(env: Env) -> dict[str, Any]:
    """What RESULTS.md opens with: CPU, memory, kernel and every relevant version."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    client = redis.Redis.from_url(env.redis_url, decode_responses=True)
    with contextlib.closing(client):
        server = client.info("server")
    admin = sa.make_url(env.admin_url)
    with psycopg.connect(_libpq(admin)) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
    versions: dict[str, str] = {"Python": platform.python_version()}
    for name, dist in (
        ("fedtrack-redis", "fedtrack-redis"),
        ("redis-py", "redis"),
        ("hiredis", "hiredis"),
        ("SQLAlchemy", "SQLAlchemy"),
        ("psycopg", "psycopg"),
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(dist)
    commit = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "redis": (
            f"redis-server {server['redis_version']}"
            + (" (throwaway server of this run, no persistence)" if env.own_redis else "")
        ),
        "postgresql": f"PostgreSQL {pg_version} (local server; scratch databases)",
        "versions": {
            "Python": versions.pop("Python"),
            "redis-server": server["redis_version"],
            "PostgreSQL": pg_version,
            **versions,
        },
        "commit": commit,
    }


def standalone_main(doc: str | None, run: Callable[[Env, Report], None], quick_help: str) -> None:
    """``python -m benchmarks.<module> [--quick] [--redis-url URL]``: one section alone."""
    import argparse
    import sys

    from benchmarks.report import Report, summary_table

    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway one")
    options = parser.parse_args()
    report = Report(options.quick)
    with bench_env(options.quick, options.redis_url) as env:
        run(env, report)
    print("\n".join(summary_table(report)))
    sys.exit(1 if report.failed_checks else 0)
