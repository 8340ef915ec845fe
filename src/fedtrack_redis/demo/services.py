"""Throwaway services for the demo: a local redis-server, or fakeredis's TCP server."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

import redis

log = logging.getLogger("fedtrack_redis.demo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


class RedisServer:
    """A ``redis-server`` with no persistence on 127.0.0.1 and a free port, in a
    temporary directory of its own: the one launcher of the demo, the benchmarks and the
    tests (which kill, restart and cluster it).

    ``extra_args`` are appended to the command line (a cluster node's or a replica's
    options); subclasses may replace `command` altogether (a sentinel).
    """

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="fedtrack-redis-")
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            *self.extra_args,
        ]

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ready(self.url)
        return self

    def stop(self) -> None:
        """SIGTERM, and wait for the process to end."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port: with no persistence, it comes back empty."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A `RedisServer` for the context's duration; yields its URL."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[tuple[str, str]]:
    """Yield (url, description) of a Redis that lives as long as the context."""
    if shutil.which("redis-server"):
        with redis_server() as url:
            yield url, f"throwaway redis-server at {url}"
        return
    from fakeredis import TcpFakeServer

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_ready(url)
        yield url, f"embedded fakeredis server at {url} (no redis-server found)"
    finally:
        server.shutdown()
        server.server_close()
