"""Operators and delivery health: the CLI's `health` commands, the API's health routes,
the `fedtrack_domains{state}` gauge, the configuration variables."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cli_helpers import Run, one_error_line
from fedtrack_redis import ConfigurationError, FederationTracker, HealthPolicy
from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from fedtrack_redis.store.schema import federation_audit
from tracker_helpers import make_tracker

__all__ = ["make_tracker"]

TOKEN = "test-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = HealthPolicy(
    failures=2, backoff_min=30.0, backoff_max=60.0, unavailable_after=7, period=3600.0
)
Make = Callable[..., FederationTracker]


def hold(tracker: FederationTracker, domain: str) -> None:
    for _ in range(2):
        tracker.record_failure(domain, "SMTP")
    tracker.push()


def audit_targets(database_url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(federation_audit.c.action, federation_audit.c.target)
        ).all()
    engine.dispose()
    return [(str(a), str(t)) for a, t in rows]


def test_cli_health_list_and_reset(run: Run, make_tracker: Make, env: dict[str, str]) -> None:
    tracker = make_tracker(health=FAST)
    hold(tracker, "cli.example")
    code, out, _err = run("health", "list", "--json")
    assert code == 0
    listed = json.loads(out)["domains"]
    assert [(d["domain"], d["state"]) for d in listed] == [("cli.example", "backoff")]
    code, out, _err = run("health", "list", "--state", "unavailable")
    assert code == 0 and "cli.example" not in out
    code, out, _err = run("health", "reset", "CLI.example")
    assert code == 0 and "backoff -> healthy" in out
    assert tracker.health("cli.example").state == "healthy"  # type: ignore[union-attr]
    assert ("health_reset", "cli.example") in audit_targets(env["FEDTRACK_DATABASE_URL"])
    code, _out, err = run("health", "reset", "bad domain")
    assert code == 2
    one_error_line(err)


@pytest.fixture
def client(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        admin_token=TOKEN,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_health_list_reset_and_gauge(
    client: TestClient, make_tracker: Make, migrated_postgres_url: str
) -> None:
    tracker = make_tracker(health=FAST)
    hold(tracker, "api.example")
    tracker.record_success("fine.example", 3, "SMTP")
    tracker.push()
    body = client.get("/api/federation/health", headers=AUTH).json()
    assert body["counts"] == {"healthy": 1, "backoff": 1, "unavailable": 0}
    assert [d["domain"] for d in body["domains"]] == ["api.example"]
    assert client.get("/api/federation/health?state=nope", headers=AUTH).status_code == 422
    families = {
        f.name: f for f in text_string_to_metric_families(client.get("/metrics", headers=AUTH).text)
    }
    samples = {s.labels["state"]: s.value for s in families["fedtrack_domains"].samples}
    assert samples == {"healthy": 1, "backoff": 1, "unavailable": 0}
    reply = client.post("/api/federation/servers/API.example/reset", headers=AUTH)
    assert reply.status_code == 200
    assert reply.json() == {"domain": "api.example", "previous": "backoff", "state": "healthy"}
    assert tracker.health("api.example").state == "healthy"  # type: ignore[union-attr]
    assert ("health_reset", "api.example") in audit_targets(migrated_postgres_url)
    bad = client.post("/api/federation/servers/bad%20domain/reset", headers=AUTH)
    assert bad.status_code == 400 and bad.json()["detail"]


def test_health_configuration_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FEDTRACK_HEALTH_FAILURES": "5",
            "FEDTRACK_BACKOFF_MIN": "10",
            "FEDTRACK_WEBHOOK_URLS": "http://a.example/h, https://b.example/h",
            "FEDTRACK_WEBHOOK_SECRET": "k",
        }
    )
    assert settings.health == HealthPolicy(failures=5, backoff_min=10.0)
    assert [hook.url for hook in settings.webhooks] == ["http://a.example/h", "https://b.example/h"]
    assert Settings.from_env({}).health is None
    for env in (
        {"FEDTRACK_HEALTH_FAILURES": "x"},
        {"FEDTRACK_BACKOFF_MAX": "1", "FEDTRACK_BACKOFF_MIN": "5"},
        {"FEDTRACK_WEBHOOK_URLS": "http://a.example"},
        {"FEDTRACK_WEBHOOK_URLS": "ftp://a", "FEDTRACK_WEBHOOK_SECRET": "k"},
    ):
        with pytest.raises(ConfigurationError) as info:
            Settings.from_env(env)
        assert "\n" not in str(info.value)
