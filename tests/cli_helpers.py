"""Fixtures shared by the CLI tests: the `FEDTRACK_*` environment pointing at this test's
Redis namespace and migrated PostgreSQL, a runner that returns (exit code, stdout,
stderr), and a PolicyStore on the same backends. Loaded by conftest as a plugin."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fedtrack_redis import PolicyStore
from fedtrack_redis.cli.main import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, migrated_postgres_url: str, redis_url: str, namespace: str
) -> Iterator[dict[str, str]]:
    values = {
        "FEDTRACK_REDIS_URL": redis_url,
        "FEDTRACK_DATABASE_URL": migrated_postgres_url,
        "FEDTRACK_NAMESPACE": namespace,
        "FEDTRACK_LOCAL_DOMAIN": "mail.example",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")  # tables are not wrapped to the test runner's width
    yield values


@pytest.fixture
def run(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    return invoke


@pytest.fixture
def store(env: dict[str, str]) -> Iterator[PolicyStore]:
    with PolicyStore(
        env["FEDTRACK_DATABASE_URL"], env["FEDTRACK_REDIS_URL"], namespace=env["FEDTRACK_NAMESPACE"]
    ) as policy_store:
        yield policy_store


def one_error_line(err: str) -> str:
    """The CLI's contract for bad input: exactly one line on stderr, prefixed."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fedtrack: error: ")
    return lines[0]
