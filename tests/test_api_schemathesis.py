"""Schemathesis against the served OpenAPI document: generated requests never get a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import free_port, wait_for

TOKEN = "schemathesis-token-0123456789abcdefghij"


@pytest.fixture
def served_api(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "FEDTRACK_REDIS_URL": redis_url,
        "FEDTRACK_DATABASE_URL": migrated_postgres_url,
        "FEDTRACK_NAMESPACE": namespace,
        "FEDTRACK_ADMIN_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "fedtrack_redis.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 30, "admin API to start")
        yield url
    finally:
        server.terminate()
        server.wait(15)


@pytest.mark.slow
def test_generated_requests_never_get_a_server_error(served_api: str) -> None:
    binary = Path(sys.executable).with_name("schemathesis")
    command = [str(binary) if binary.exists() else shutil.which("schemathesis") or "schemathesis"]
    result = subprocess.run(
        [
            *command,
            "run",
            f"{served_api}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
