"""The test fixtures start throwaway Redis and PostgreSQL servers when none answer, as on a
fresh machine: run a few real-service tests in a child pytest with the local services
'absent' (pointed at closed ports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import free_port

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_throwaway_servers_are_started_when_no_service_answers() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDTRACK_TEST_")}
    env["FEDTRACK_TEST_LOCAL_REDIS"] = f"redis://127.0.0.1:{free_port()}/0"
    env["FEDTRACK_TEST_LOCAL_POSTGRES"] = (
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_policy_store.py::test_add_has_remove"),
            str(TESTS / "test_tracker.py::test_successes_sum_their_latency"),
        ],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
