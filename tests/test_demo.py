"""`fedtrack demo` runs, fills the dashboard API with traffic, and stops cleanly; its token
and its "Database:" line are safe."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from servers import free_port, wait_for


@pytest.mark.slow
def test_demo_reports_traffic_then_stops_cleanly(tmp_path: object) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDTRACK_")}
    env["FEDTRACK_ADMIN_TOKEN"] = "demo-test-token-0123456789abcdefghijklm"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedtrack_redis.cli",
            "demo",
            "--port",
            str(port),
            "--duration",
            "12",
            "--rate",
            "500",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    headers = {"Authorization": "Bearer demo-test-token-0123456789abcdefghijklm"}

    def deliveries() -> int:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/federation/status", headers=headers, timeout=2
            )
        except httpx.HTTPError:
            return 0
        return int(response.json()["successful_deliveries"]) if response.status_code == 200 else 0

    try:
        first = wait_for(deliveries, 40, "the demo to report deliveries")
        wait_for(lambda: deliveries() > first, 10, "the numbers to keep moving")
        servers = httpx.get(
            f"http://127.0.0.1:{port}/api/federation/servers?limit=5", headers=headers, timeout=2
        ).json()
        assert servers["total"] > 50
        assert servers["servers"][0]["last_active"] > 0
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output
    assert "Dashboard: http://127.0.0.1:" in output
    assert "stopped" in output


def test_demo_prints_the_database_url_redacted_and_makes_a_long_enough_token() -> None:
    """No FEDTRACK_ADMIN_TOKEN: the demo makes one the API accepts (a short one would exit 2
    before anything starts); the database does not answer, so it stops with exit 1."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDTRACK_")}
    env["FEDTRACK_DATABASE_URL"] = "postgresql+psycopg://fedtrack:s3cretpass@127.0.0.1:1/x"
    result = subprocess.run(
        [sys.executable, "-m", "fedtrack_redis.cli", "demo", "--duration", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Database: postgresql+psycopg://fedtrack:***@127.0.0.1:1/x\n" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "fedtrack: error: service unavailable: database migration failed (OperationalError)"
        " at postgresql+psycopg://fedtrack:***@127.0.0.1:1/x"
    ]
    assert "s3cretpass" not in output


def test_demo_refuses_a_short_token() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDTRACK_")}
    env["FEDTRACK_ADMIN_TOKEN"] = "short"
    result = subprocess.run(
        [sys.executable, "-m", "fedtrack_redis.cli", "demo", "--duration", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # nothing started
    assert result.stderr.startswith("fedtrack: error: FEDTRACK_ADMIN_TOKEN: ")
