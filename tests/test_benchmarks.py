"""The benchmark suite keeps working: its quick mode runs end to end, writes its report
elsewhere than the published results, and every correctness check inside it (exact
totals in Redis and PostgreSQL) passes. No timing is asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_mode_runs_and_its_correctness_checks_pass(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    published = ROOT / "benchmarks" / "RESULTS.md"
    before = published.read_bytes() if published.exists() else None
    env = dict(os.environ, FEDTRACK_BENCH_DATABASE_URL=postgres_admin_url)
    env.pop("FEDTRACK_BENCH_REDIS_URL", None)  # quick mode starts a throwaway redis-server
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["quick"] is True
    assert not data["errors"]
    checks = data["checks"]
    assert checks and all(check["ok"] for check in checks), [
        check for check in checks if not check["ok"]
    ]
    exact = [check["name"] for check in checks if check["name"].startswith("exact totals")]
    assert any("Redis" in name for name in exact) and any("PostgreSQL" in name for name in exact)
    sections = {figure["section"] for figure in data["figures"]}
    assert sections == {
        "hot path",
        "push",
        "cluster",
        "propagation",
        "flusher",
        "memory",
        "rules",
        "engines",
        "qshape",
        "health",
        "history",
    }
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Summary against the targets" in text
    # every section the run measured is published (health and history once were not)
    assert [section for section in sorted(sections) if f"### {section}\n" not in text] == []
    assert (published.read_bytes() if published.exists() else None) == before


def test_quick_mode_refuses_to_overwrite_the_published_results() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "never writes the published results" in result.stderr
