"""Run the demo: services, simulated workers, an elected flusher, the dashboard, a summary."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TextIO

import uvicorn

from ..api.app import create_app
from ..api.tokens import parse_tokens
from ..config import Settings
from ..reads import StatsReader
from ..redact import redact_url
from .services import throwaway_redis
from .traffic import run_worker


@contextlib.contextmanager
def _database(settings_url: str | None) -> Iterator[str]:
    if settings_url:
        yield settings_url
        return
    directory = tempfile.mkdtemp(prefix="fedtrack-demo-")
    yield f"sqlite:///{os.path.join(directory, 'fedtrack-demo.sqlite3')}"


def run(
    *,
    port: int = 8025,
    workers: int = 4,
    rate: float = 1500.0,
    duration: float | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
    admin_token: str | None = None,
    admin_tokens: str | None = None,
    out: TextIO | None = None,
) -> None:
    """Run until Ctrl-C (or `duration` seconds), then stop everything with a final flush.

    Without `admin_token` / `admin_tokens` a fresh admin token (43 characters) is made
    and printed with the dashboard's URL.
    """
    stream = out if out is not None else sys.stdout
    given = bool(admin_token or admin_tokens)
    token = admin_token if given else secrets.token_urlsafe(32)
    parse_tokens(token, admin_tokens)  # a bad token fails here, before anything starts
    redis_context = (
        contextlib.nullcontext((redis_url, redis_url)) if redis_url else throwaway_redis()
    )
    with redis_context as (url, described), _database(database_url) as database:
        _say(stream, f"Redis: {redact_url(described)}")
        _say(stream, f"Database: {redact_url(database)}")
        settings = Settings(
            redis_url=url,
            database_url=database,
            namespace="demo",
            local_domain="mail.example",
            admin_token=token,
            admin_tokens=admin_tokens,
        )
        shown = "the one you set (FEDTRACK_ADMIN_TOKEN / _TOKENS)" if given else token
        _run_cluster(settings, port, workers, rate, duration, stream, str(shown))


def _run_cluster(
    settings: Settings,
    port: int,
    workers: int,
    rate: float,
    duration: float | None,
    stream: TextIO,
    shown_token: str,
) -> None:
    from ..connections import database_engine
    from ..store import migrate
    from ..tracker import FederationTracker

    database = settings.require_database()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    # The demo is its own operator: it creates the schema, hydrates the namespace and runs
    # the flusher (elected via Redis) before the workers start.
    schema = database_engine(database)
    migrate.upgrade(schema)
    schema.dispose()
    anchor = FederationTracker(settings.redis_url, namespace=settings.namespace)
    anchor.hydrate(database)
    flusher = anchor.start_flusher(database, interval=5.0)
    processes = [
        context.Process(
            target=run_worker,
            args=(settings.redis_url, database, settings.namespace, stop),
            kwargs={"seed": index, "rate": rate, "local_domain": settings.local_domain},
            daemon=True,
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, daemon=True)
    api_thread.start()
    finished = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: finished.set())
    signal.signal(signal.SIGTERM, lambda *_: finished.set())
    _say(stream, f"Dashboard: http://127.0.0.1:{port}/   admin token: {shown_token}")
    _say(stream, f"{workers} simulated workers, flusher every 5 s; Ctrl-C stops")
    reader = StatsReader(settings.redis_url, namespace=settings.namespace)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not finished.wait(1.0):
            _summary(stream, reader, flusher.is_leader)
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        _say(stream, "\nstopping: workers push what they hold, then a final flush…")
        stop.set()
        for process in processes:
            process.join(30)
        flusher.stop()
        server.should_exit = True
        api_thread.join(10)
        reader.close()
        anchor.close()
        _say(stream, "stopped")


def _summary(stream: TextIO, reader: StatsReader, leader: bool) -> None:
    sums = reader.totals()
    failures = sums["failed_http"] + sums["failed_https"] + sums["failed_smtp"]
    line = (
        f"\r{sums['domains']} domains · {sums['successful_deliveries']} deliveries ·"
        f" {failures} failures · {sums['queued_messages']} queued ·"
        f" flusher {'leading' if leader else 'standing by'}   "
    )
    stream.write(line)
    stream.flush()


def _say(stream: TextIO, message: str) -> None:
    stream.write(message + "\n")
    stream.flush()
