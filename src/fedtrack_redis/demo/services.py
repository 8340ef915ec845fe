"""Throwaway services for the demo: a local redis-server, or fakeredis's TCP server."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import redis

log = logging.getLogger("fedtrack_redis.demo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[str]:
    """Run `binary` (a ``redis-server``) with no persistence on a free port; yield its URL."""
    port = free_port()
    directory = tempfile.mkdtemp(prefix="fedtrack-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_ready(url)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[tuple[str, str]]:
    """Yield (url, description) of a Redis that lives as long as the context."""
    binary = shutil.which("redis-server")
    if binary:
        with redis_server(binary) as url:
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
