"""The admin HTTP API against real Redis and PostgreSQL: auth, policy routes, validation,
health, metrics, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fedtrack_redis import ConfigurationError
from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from servers import wait_for

TOKEN = "test-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(migrated_postgres_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=TOKEN,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_app_needs_a_token(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="FEDTRACK_ADMIN_TOKEN"):
        create_app(Settings(redis_url=settings.redis_url, database_url=settings.database_url))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/federation/settings"),
        ("PUT", "/api/federation/settings"),
        ("GET", "/api/federation/rules"),
        ("POST", "/api/federation/rules"),
        ("DELETE", "/api/federation/rules"),
        ("GET", "/api/federation/servers"),
        ("GET", "/api/federation/servers/a.example"),
        ("GET", "/api/federation/check/a.example"),
        ("GET", "/api/federation/status"),
        ("GET", "/api/federation/engine"),
        ("GET", "/metrics"),
    ],
)
def test_every_endpoint_needs_the_token(client: TestClient, method: str, path: str) -> None:
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in missing.json()["detail"]
    wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == "wrong bearer token"


def test_open_endpoints(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert (health["redis"], health["database"], health["engine"]) == ("ok", "ok", "single")
    assert health["mismatch"] is None and len(health["database_id"]) == 32
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/").status_code == 200


def test_settings_round_trip(client: TestClient) -> None:
    assert client.get("/api/federation/settings", headers=AUTH).json() == {
        "enabled": True,
        "policy": "ACCEPT",
    }
    response = client.put("/api/federation/settings", json={"policy": "reject"}, headers=AUTH)
    assert response.json() == {"enabled": True, "policy": "REJECT"}
    response = client.put("/api/federation/settings", json={"enabled": False}, headers=AUTH)
    assert response.json() == {"enabled": False, "policy": "REJECT"}


@pytest.mark.parametrize(
    "body",
    [
        {"policy": "maybe"},
        {},
        {"enabled": "sometimes"},
        {"policy": 5},
        {"policy": "accept", "enabled": []},
    ],
)
def test_bad_settings_are_4xx_and_change_nothing(client: TestClient, body: object) -> None:
    response = client.put("/api/federation/settings", json=body, headers=AUTH)
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]
    assert client.get("/api/federation/settings", headers=AUTH).json() == {
        "enabled": True,
        "policy": "ACCEPT",
    }


def test_rules_add_list_remove_several_at_once(client: TestClient) -> None:
    added = client.post(
        "/api/federation/rules",
        json={"domains": ["A.example", "[1.2.3.4]", "a.example"]},
        headers=AUTH,
    ).json()
    assert added == {"changed": ["a.example", "1.2.3.4"], "unchanged": [], "total": 2}
    again = client.post("/api/federation/rules", json={"domains": ["a.example"]}, headers=AUTH)
    assert again.json() == {"changed": [], "unchanged": ["a.example"], "total": 2}
    listed = client.get("/api/federation/rules", headers=AUTH).json()
    assert listed["total"] == 2
    assert [rule["domain"] for rule in listed["rules"]] == ["1.2.3.4", "a.example"]
    assert all(isinstance(rule["created_at"], int) for rule in listed["rules"])
    removed = client.request(
        "DELETE",
        "/api/federation/rules",
        json={"domains": ["a.example", "b.example"]},
        headers=AUTH,
    ).json()
    assert removed == {"changed": ["a.example"], "unchanged": ["b.example"], "total": 1}


def test_a_bad_domain_in_a_batch_changes_nothing(client: TestClient) -> None:
    response = client.post(
        "/api/federation/rules", json={"domains": ["good.example", "bad domain"]}, headers=AUTH
    )
    assert response.status_code == 400
    assert "invalid rule 'bad domain'" in response.json()["detail"]
    assert client.get("/api/federation/rules", headers=AUTH).json()["total"] == 0
    empty = client.post("/api/federation/rules", json={"domains": []}, headers=AUTH)
    assert empty.status_code == 400


def test_check_explains(client: TestClient) -> None:
    client.post("/api/federation/rules", json={"domains": ["spam.example"]}, headers=AUTH)
    rules = client.get("/api/federation/rules", headers=AUTH).json()["rules"]
    decision = client.get("/api/federation/check/SPAM.example", headers=AUTH).json()
    assert decision == {
        "domain": "spam.example",
        "allowed": False,
        "policy": "ACCEPT",
        "reason": "blocked by rule",
        "rule": "spam.example",
        "matched": ["spam.example"],
        "rules": [rules[0]],
    }
    local = client.get("/api/federation/check/mail.example", headers=AUTH).json()
    assert local["allowed"] is True
    assert client.get("/api/federation/check/bad%20domain", headers=AUTH).status_code == 400


def test_unknown_server_is_404_and_bad_name_400(client: TestClient) -> None:
    assert client.get("/api/federation/servers/unknown.example", headers=AUTH).status_code == 404
    assert client.get("/api/federation/servers/bad%20name", headers=AUTH).status_code == 400


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=5000", "offset=-1", "sort=bogus", "q=" + "x" * 300]
)
def test_bad_server_queries_are_422(client: TestClient, query: str) -> None:
    response = client.get(f"/api/federation/servers?{query}", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_metrics_parse_and_name_the_rules(client: TestClient) -> None:
    client.post("/api/federation/rules", json={"domains": ["x.example", "y.example"]}, headers=AUTH)
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["fedtrack_rules"].samples[0].value == 2
    assert "fedtrack_events" in families
    assert families["fedtrack_redis_up"].samples[0].value == 1
    assert all(name.startswith("fedtrack_") for name in families if name.startswith("fedtrack"))


def test_openapi_document_lists_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    for path in [
        "/api/federation/settings",
        "/api/federation/rules",
        "/api/federation/servers",
        "/api/federation/servers/{domain}",
        "/api/federation/check/{domain}",
        "/api/federation/status",
        "/healthz",
        "/metrics",
    ]:
        assert path in paths


def test_metrics_show_this_process_push_and_leadership(
    client: TestClient, settings: Settings
) -> None:
    from fedtrack_redis import FederationTracker

    assert settings.database_url is not None
    with FederationTracker(settings.redis_url, namespace=settings.namespace) as tracker:
        tracker.hydrate(settings.database_url)
        tracker.record_success("m.example", 10, "HTTPS")
        tracker.record_failure("m.example", "SMTP")
        tracker.push()
        flusher = tracker.start_flusher(settings.database_url, interval=60)
        flusher.flush_once()  # the flusher's thread may have written the row already
        wait_for(lambda: flusher.is_leader, 10, "the flusher to lead")
        text = client.get("/metrics", headers=AUTH).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    push_count = [s for s in families["fedtrack_push_seconds"].samples if s.name.endswith("_count")]
    assert push_count[0].value >= 1
    assert families["fedtrack_leader"].samples[0].value == 1
    assert families["fedtrack_flush_rows"].samples[0].value >= 1
    events = {
        (s.labels["field"], s.labels["transport"]): s.value
        for s in families["fedtrack_events"].samples
        if s.name == "fedtrack_events_total"
    }
    assert events[("success", "HTTPS")] == 1
    assert events[("failure", "SMTP")] == 1
    top = [
        s for s in families["fedtrack_domain_events"].samples if s.labels["domain"] == "m.example"
    ]
    assert top


def test_healthz_is_503_when_redis_does_not_answer(
    migrated_postgres_url: str, namespace: str
) -> None:
    from servers import free_port

    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=migrated_postgres_url,
        namespace=namespace,
        admin_token=TOKEN,
    )
    with TestClient(create_app(settings)) as down:
        response = down.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert (body["redis"], body["database"]) == ("unavailable", "ok")
        servers = down.get("/api/federation/servers", headers=AUTH)
        assert servers.status_code == 503
        assert "stats" in servers.json()["detail"]


def test_healthz_is_503_with_the_reason_when_redis_holds_another_database(
    client: TestClient, settings: Settings, redis_client: Any
) -> None:
    from fedtrack_redis.keys import NamespaceKeys

    keys = NamespaceKeys(settings.namespace)
    redis_client.set(keys.shards[3].hydrated, "f" * 32)
    response = client.get("/healthz")
    assert response.status_code == 503
    reason = response.json()["mismatch"]
    assert "f" * 32 in reason and response.json()["database_id"] in reason
