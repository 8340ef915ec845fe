"""The soak with faults (``benchmarks/soak.py``, docs/safety.md) passes in 2 minutes.

It starts its own Redis Sentinel set and PostgreSQL, so it needs neither the shared
services nor the fixtures; 3 workers keep it within about 3 minutes on 2 cores. Every
check of the soak must pass: Redis = PostgreSQL = the workers' ledgers, every process's
rules = the database's, the wrong database refused, every fault recovered in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Seconds the 2-minute soak may take, set-up, final checks and teardown included.
DEADLINE = 330


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE + 90)
def test_two_minute_soak_with_faults_passes(tmp_path: Path) -> None:
    report = tmp_path / "soak-results.md"
    command = [sys.executable, "-m", "benchmarks.soak", "--minutes", "2", "--workers", "3"]
    process = subprocess.Popen(
        [*command, "--output", str(report)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its whole process group can be killed as a last resort
    )
    try:
        output, _ = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.terminate()  # the soak tears its servers and processes down on SIGTERM
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"the soak did not finish within {DEADLINE} s:\n{output[-6000:]}")
    assert process.returncode == 0, output[-8000:]
    text = report.read_text()
    assert text.startswith("# Soak with faults: PASSED"), text
    assert "**FAIL**" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 8, rows  # every fault of the schedule ran and is in the table
