"""The dashboard's qshape table in a real browser (Debian's Chromium driven by Playwright):
what it draws equals what GET /api/federation/qshape returns, and each count is coloured by
its column's age."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from fedtrack_redis import FederationTracker, Flusher
from test_dashboard_browser import ARTIFACTS, TOKEN, Watched, page, served, settings, watched

__all__ = ["page", "served", "settings", "watched"]  # fixtures


@pytest.fixture
def queues(
    redis_url: str, namespace: str, migrated_postgres_url: str
) -> Iterator[FederationTracker]:
    """A live worker with in-flight messages of several ages (its namespace hydrated)."""
    flusher = Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=3600)
    flusher.flush_once()
    now = time.time()
    with FederationTracker(redis_url, namespace=namespace) as live:
        for age in (10, 20, 400, 1500):
            live.increment_queue("slow.example", enqueued_at=now - age)
        live.increment_queue("stuck.example", enqueued_at=now - 90_000)
        live.increment_queue("fresh.example")
        live.push()
        yield live
    flusher.stop()


@pytest.mark.slow
def test_the_qshape_table_equals_the_api_and_is_coloured_by_age(
    served: str, watched: Watched, queues: FederationTracker
) -> None:
    page = watched.page
    page.goto(served + "/")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator('#qshape tr[data-domain="slow.example"]')).to_be_visible(timeout=10_000)
    shape = httpx.get(
        f"{served}/api/federation/qshape?top=20", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert page.locator("#qshape thead th").all_inner_texts() == ["domain", *shape["columns"]]
    drawn = [row.locator("td").all_inner_texts() for row in page.locator("#qshape tbody tr").all()]
    assert drawn == [[r["domain"], *map(str, r["counts"])] for r in shape["rows"]]
    assert page.locator("#qshape tfoot td").all_inner_texts() == [
        "TOTAL",
        *map(str, shape["total"]),
    ]
    assert [r["domain"] for r in shape["rows"]] == [
        "slow.example",
        "fresh.example",
        "stuck.example",
    ]
    stuck = page.locator('#qshape tr[data-domain="stuck.example"] td')
    expect(stuck.nth(11)).to_have_class("age age-9")  # 1280+
    expect(stuck.nth(2)).not_to_have_class("age age-0")  # a zero is not coloured
    slow = page.locator('#qshape tr[data-domain="slow.example"] td')
    expect(slow.nth(2)).to_have_class("age age-0")
    expect(slow.nth(3)).to_have_class("age age-1")
    expect(slow.nth(5)).to_have_class("age age-3")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#qshape").screenshot(path=str(ARTIFACTS / "dashboard-qshape.png"))
    assert watched.violations() == []
    assert watched.errors == []
