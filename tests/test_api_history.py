"""History routes of the admin API against real Redis: the series equal the tracker's,
bad windows are 422, bad names 400, watching round-trips, every route needs the token."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fedtrack_redis import FederationTracker, HealthPolicy
from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.health.events import copy_events
from fedtrack_redis.history import FIVE
from fedtrack_redis.keys import NamespaceKeys
from history_helpers import Clock, clock
from tracker_helpers import make_tracker

__all__ = ["clock", "make_tracker"]

TOKEN = "test-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(migrated_postgres_url: str, redis_url: str, namespace: str) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=TOKEN,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/federation/history"),
        ("GET", "/api/federation/servers/a.example/history"),
        ("GET", "/api/federation/watched"),
        ("PUT", "/api/federation/servers/a.example/watch"),
        ("DELETE", "/api/federation/servers/a.example/watch"),
    ],
)
def test_history_routes_need_the_token(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 401


def test_history_routes_return_the_trackers_series(
    client: TestClient, make_tracker: Callable[..., FederationTracker], clock: Clock
) -> None:
    tracker = make_tracker()
    clock.advance(FIVE - 30)
    tracker.record_success("a.example", 120, "HTTPS")
    tracker.record_failure("a.example", "SMTP")
    tracker.push()
    clock.advance(60)  # into the next minute and 5-minute bucket
    tracker.record_success("a.example", 80)
    tracker.push()
    for window, width, count in (("1h", 60, 60), ("24h", 60, 1440), ("7d", 300, 2016)):
        body = client.get("/api/federation/history", params={"window": window}, headers=AUTH)
        assert body.status_code == 200
        data = body.json()
        assert (data["window"], data["width"], data["domain"]) == (window, width, None)
        assert len(data["buckets"]) == count
        assert data["buckets"] == [b.to_dict() for b in tracker.history(window=window)]
    for window, count in (("1h", 12), ("24h", 288), ("7d", 2016)):
        data = client.get(
            "/api/federation/servers/A.Example./history", params={"window": window}, headers=AUTH
        ).json()
        assert (data["domain"], data["width"], len(data["buckets"])) == ("a.example", 300, count)
        assert data["buckets"] == [b.to_dict() for b in tracker.history("a.example", window)]
        assert sum(b["successful_deliveries"] for b in data["buckets"]) == 2
    default = client.get("/api/federation/history", headers=AUTH).json()
    assert default["window"] == "1h"


@pytest.mark.parametrize("window", ["2h", "", "7D", "3600"])
def test_a_bad_window_is_422(client: TestClient, window: str) -> None:
    for path in ("/api/federation/history", "/api/federation/servers/a.example/history"):
        answer = client.get(path, params={"window": window}, headers=AUTH)
        assert answer.status_code == 422
        assert "1h" in str(answer.json()["detail"])


def test_a_bad_domain_is_400(client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/federation/servers/bad_name!/history"),
        ("PUT", "/api/federation/servers/bad_name!/watch"),
    ):
        answer = client.request(method, path, headers=AUTH)
        assert answer.status_code == 400
        assert "bad_name!" in answer.json()["detail"]


def test_watching_round_trips(client: TestClient) -> None:
    put = client.put("/api/federation/servers/B.example/watch", headers=AUTH).json()
    assert put == {"domain": "b.example", "watched": True, "changed": True}
    again = client.put("/api/federation/servers/b.example/watch", headers=AUTH).json()
    assert again["changed"] is False
    assert client.get("/api/federation/watched", headers=AUTH).json() == {"domains": ["b.example"]}
    gone = client.delete("/api/federation/servers/b.example/watch", headers=AUTH).json()
    assert gone == {"domain": "b.example", "watched": False, "changed": True}
    assert client.get("/api/federation/watched", headers=AUTH).json() == {"domains": []}


def test_a_domain_history_carries_its_health_changes_in_the_window(
    client: TestClient,
    make_tracker: Callable[..., FederationTracker],
    clock: Clock,
    migrated_postgres_url: str,
    redis_url: str,
    namespace: str,
) -> None:
    tracker = make_tracker(health=HealthPolicy(failures=2, backoff_min=60.0))
    tracker.record_failure("down.example", "SMTP")
    tracker.record_failure("down.example", "SMTP")
    tracker.push()
    went_down = clock.now
    clock.advance(120)
    tracker.record_success("down.example", 50, "SMTP")
    tracker.push()
    path = "/api/federation/servers/down.example/history"
    assert client.get(path, headers=AUTH).json()["health"] == []  # not copied yet
    database = sa.create_engine(migrated_postgres_url)
    assert copy_events(RedisEngine.open(redis_url), NamespaceKeys(namespace), database, []) == 2
    database.dispose()
    data = client.get(path, headers=AUTH).json()
    assert data["health"] == [
        {"at": went_down, "from": "healthy", "to": "backoff"},
        {"at": went_down + 120, "from": "backoff", "to": "healthy"},
    ]
    assert "health" not in client.get("/api/federation/history", headers=AUTH).json()
