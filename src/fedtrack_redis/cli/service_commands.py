"""Long-running and maintenance commands: flusher, serve, db upgrade."""

from __future__ import annotations

import signal
import threading

import click

from ..connections import database_engine
from ..store import migrate
from .context import current
from .errors import needs_extra
from .output import say


@click.command("flusher")
@click.option(
    "--interval",
    type=float,
    envvar="FEDTRACK_FLUSH_INTERVAL",
    default=30.0,
    show_default=True,
    help="Seconds between flushes [env FEDTRACK_FLUSH_INTERVAL]",
)
@click.option(
    "--lock-ttl",
    type=click.FloatRange(min=1.0),
    default=10.0,
    show_default=True,
    help="Seconds a stalled leader keeps the lock before another takes over.",
)
def flusher_command(interval: float, lock_ttl: float) -> None:
    """Run the elected flusher: persists changed stats to the database until stopped."""
    from ..config import positive_seconds
    from ..flusher import Flusher

    settings = current().settings
    interval = positive_seconds("--interval", interval, 30.0)
    flusher = Flusher(
        settings.redis_url,
        settings.require_database(),
        namespace=settings.namespace,
        interval=interval,
        lock_ttl=lock_ttl,
        database_id=settings.database_id,
        webhooks=settings.webhooks,
    ).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    say(f"flusher running (namespace {settings.namespace}, every {interval:g} s); Ctrl-C stops")
    stop.wait()
    flusher.stop()
    say("flusher stopped")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True)
def serve_command(host: str, port: int) -> None:
    """Serve the admin API and the dashboard (needs FEDTRACK_ADMIN_TOKEN or _TOKENS)."""
    with needs_extra("server", "the admin API"):
        from ..api.server import serve

    serve(current().settings, host=host, port=port)


@click.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations shipped with this version."""
    engine = database_engine(current().settings.require_database())
    try:
        migrate.upgrade(engine)
        say(f"database schema at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("rehydrate")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def db_rehydrate(yes: bool) -> None:
    """Clear the namespace in Redis and rebuild it from this database (G11 repair).

    For when Redis was hydrated from the wrong database (a flusher says "database
    mismatch" on every tick): every key of the namespace goes, then the stats, acks and
    the policy come back from the database given by FEDTRACK_DATABASE_URL. The shards of
    the previous key schema are retired and deleted too, changes not flushed included.
    """
    from ..engine import RedisEngine
    from ..hydrate import clear_namespace, hydrate_shards
    from ..identity import IdentityGuard, database_id
    from ..keys import NamespaceKeys
    from ..policy.sync import PolicyRedis, rebuild_redis
    from ..redact import redact_url
    from ..scripts import Scripts
    from ..upgrade import drop_retired, retire_previous
    from .rule_commands import confirm

    settings = current().settings
    url = settings.require_database()
    database = database_engine(url, pooled=False)
    redis_engine = RedisEngine.open(settings.redis_url)
    try:
        identity = database_id(database)
        confirm(
            f"Delete namespace {settings.namespace!r} from Redis and rebuild it from"
            f" {redact_url(url)} (database {identity})?",
            yes,
        )
        keys = NamespaceKeys(settings.namespace)
        guard = IdentityGuard(settings.namespace, pinned=settings.database_id, database_url=url)
        guard.check(identity)  # a pinned FEDTRACK_DATABASE_ID must agree
        deleted = clear_namespace(redis_engine, keys)
        # the previous key schema's shards too, their changes not flushed included
        retire_previous(Scripts(redis_engine), keys, identity, force=True)
        deleted += drop_retired(redis_engine, keys, budget=None)
        restored = hydrate_shards(redis_engine, keys, database, guard=guard)
        rebuild_redis(database, PolicyRedis(redis_engine, keys), guard)
        say(
            f"namespace {settings.namespace!r}: {deleted} keys deleted; {restored} domains and"
            f" the policy restored from database {identity}"
        )
    finally:
        redis_engine.close()
        database.dispose()


@click.command("demo")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8025,
    show_default=True,
    help="Port of the dashboard.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=4,
    show_default=True,
    help="Simulated worker processes.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=1500.0,
    show_default=True,
    help="Events per second per worker.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop by itself after this many seconds (default: run until Ctrl-C).",
)
def demo_command(port: int, workers: int, rate: float, duration: float | None) -> None:
    """Run a small simulated cluster with a flusher and the dashboard.

    Uses FEDTRACK_REDIS_URL / FEDTRACK_DATABASE_URL when they are set; otherwise a
    throwaway redis-server (or an embedded fakeredis server) and a temporary SQLite file.
    The admin token is FEDTRACK_ADMIN_TOKEN (or FEDTRACK_ADMIN_TOKENS), or a fresh one
    printed with the URL.
    """
    import os

    settings = current().settings
    with needs_extra("demo", "the demo"):  # also fakeredis, imported only without redis-server
        from ..demo.runner import run

        run(
            port=port,
            workers=workers,
            rate=rate,
            duration=duration,
            redis_url=settings.redis_url if "FEDTRACK_REDIS_URL" in os.environ else None,
            database_url=settings.database_url if "FEDTRACK_DATABASE_URL" in os.environ else None,
            admin_token=settings.admin_token,
            admin_tokens=settings.admin_tokens,
        )


COMMANDS = [flusher_command, serve_command, db_group, demo_command]
