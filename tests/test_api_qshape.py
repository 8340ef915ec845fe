"""GET /api/federation/qshape against real Redis: the shape, the order, the totals, 422."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from fedtrack_redis import FederationTracker
from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from tracker_helpers import make_tracker

__all__ = ["make_tracker"]  # fixture

TOKEN = "test-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COLUMNS = ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"]


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


def test_qshape_returns_columns_rows_and_total(
    client: TestClient, make_tracker: Callable[..., FederationTracker]
) -> None:
    tracker = make_tracker(push_interval=3600)
    now = time.time()
    tracker.increment_queue("b.example", enqueued_at=now - 11 * 60)
    tracker.increment_queue("b.example")
    tracker.increment_queue("a.example")
    tracker.increment_queue("c.example", enqueued_at=now - 3000 * 60)
    tracker.push()
    response = client.get("/api/federation/qshape", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "columns": COLUMNS,
        "rows": [
            {"domain": "b.example", "counts": [2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]},
            {"domain": "a.example", "counts": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]},
            {"domain": "c.example", "counts": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]},
        ],
        "total": [4, 2, 0, 1, 0, 0, 0, 0, 0, 0, 1],
    }
    top = client.get("/api/federation/qshape?top=1", headers=AUTH).json()
    assert [row["domain"] for row in top["rows"]] == ["b.example"]
    assert top["total"][0] == 4  # the totals always cover every domain
    assert [domain for domain, _ in tracker.qshape()] == ["b.example", "a.example", "c.example"]


def test_an_empty_qshape(client: TestClient) -> None:
    assert client.get("/api/federation/qshape", headers=AUTH).json() == {
        "columns": COLUMNS,
        "rows": [],
        "total": [0] * 11,
    }


@pytest.mark.parametrize("query", ["top=0", "top=1001", "top=-3", "top=many", "top=2.5"])
def test_a_bad_top_is_422_with_a_message(client: TestClient, query: str) -> None:
    response = client.get(f"/api/federation/qshape?{query}", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_qshape_needs_the_token(client: TestClient) -> None:
    assert client.get("/api/federation/qshape").status_code == 401
    assert "/api/federation/qshape" in client.get("/openapi.json").json()["paths"]
