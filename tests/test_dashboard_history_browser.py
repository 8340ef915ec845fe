"""The dashboard's history charts in a real browser (Debian's Chromium driven by
Playwright): every bar of the cluster and domain charts equals the bucket the API
returns, for each window; a domain row opens its series; watching works from the page.
Saves the screenshot shown in the README (docs/dashboard.png)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from fedtrack_redis import FederationTracker
from fedtrack_redis.config import Settings
from fedtrack_redis.engine import RedisEngine
from fedtrack_redis.health.events import copy_events
from fedtrack_redis.history import FIVE
from fedtrack_redis.keys import NamespaceKeys
from history_helpers import Clock, clock
from test_dashboard_browser import ARTIFACTS, TOKEN, Watched, page, served, settings, watched
from tracker_helpers import make_tracker

__all__ = ["clock", "make_tracker", "page", "served", "settings", "watched"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rate(bucket: dict[str, int]) -> float:
    failures = bucket["failed_http"] + bucket["failed_https"] + bucket["failed_smtp"]
    attempts = failures + bucket["success_http"] + bucket["success_https"] + bucket["success_smtp"]
    return failures / attempts if attempts else 0.0


def bars(page: Page, chart: str) -> list[tuple[int, float]]:
    points: list[list[str]] = page.eval_on_selector_all(
        f"#{chart} rect.point", "els => els.map(e => [e.dataset.start, e.dataset.value])"
    )
    return [(int(start), float(value)) for start, value in points]


def check_charts(page: Page, served: str, window: str, domain: str | None = None) -> None:
    expect(page.locator("#history")).to_have_attribute(
        "data-loaded", f"{window}:{domain or ''}", timeout=10_000
    )
    routes: list[tuple[str, str]] = [(f"{served}/api/federation/history", "chart")]
    if domain:
        routes.append((f"{served}/api/federation/servers/{domain}/history", "chart-domain"))
    for url, prefix in routes:
        api: dict[str, Any] = httpx.get(url, params={"window": window}, headers=AUTH).json()
        buckets = api["buckets"]
        delivered = [(b["start"], float(b["successful_deliveries"])) for b in buckets]
        assert bars(page, f"{prefix}-deliveries") == delivered
        drawn = bars(page, f"{prefix}-failures")
        assert [start for start, _ in drawn] == [b["start"] for b in buckets]
        assert [v for _, v in drawn] == pytest.approx([rate(b) for b in buckets], abs=1e-12)
        assert any(v for _, v in delivered) and any(v for _, v in drawn)
        if prefix == "chart-domain":  # the domain's health changes are marked on its charts
            first, last = buckets[0]["start"], buckets[-1]["start"] + api["width"]
            shown = [c["at"] for c in api["health"] if first <= c["at"] < last]
            for chart in ("deliveries", "failures"):
                marks: list[str] = page.eval_on_selector_all(
                    f"#{prefix}-{chart} line.health-mark", "els => els.map(e => e.dataset.at)"
                )
                assert [int(at) for at in marks] == shown


@pytest.mark.slow
def test_history_charts_equal_the_api(
    served: str,
    settings: Settings,
    watched: Watched,
    make_tracker: Callable[..., FederationTracker],
    clock: Clock,
) -> None:
    tracker = make_tracker()
    base = int(time.time()) // FIVE * FIVE  # near the real clock: "last active" reads true
    for step in range(14):  # an hour of traffic, one push every 4 minutes and a bit
        clock.set(base - 3_300 + step * 250)
        for _ in range(5 + 3 * (step % 5)):
            tracker.record_success("alpha.example", 80 + step, "HTTPS")
        for _ in range(step % 4):
            tracker.record_failure("alpha.example", "SMTP")
        for _ in range(2 + step % 3):
            tracker.record_failure("broken.example", "HTTPS")
        tracker.record_success("broken.example", 900, "HTTP")
        tracker.record_success("inbound.example", 10)
        tracker.push()
    now = time.time()  # messages in flight, for the queue shape beside the charts
    clock.set(int(now))  # leases expire by the real clock
    for minutes in (1, 2, 7, 12, 45, 300):
        tracker.increment_queue("alpha.example", enqueued_at=now - minutes * 60)
    for minutes in (3, 1500):
        tracker.increment_queue("broken.example", enqueued_at=now - minutes * 60)
    tracker.push()
    # alpha's three failures after its successes (every fourth push) hold it back, its next
    # successes heal it: the leader copies those changes into the database
    engine = RedisEngine.open(settings.redis_url)
    database = sa.create_engine(settings.database_url)
    copy_events(engine, NamespaceKeys(settings.namespace), database, [])
    database.dispose()
    page = watched.page
    page.goto(served + "/")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    check_charts(page, served, "1h")
    assert page.locator("#chart-deliveries rect.point").count() == 60
    for window in ("24h", "7d"):
        page.select_option("#window", window)
        check_charts(page, served, window)
    page.locator('#servers tr[data-domain="alpha.example"]').click()
    check_charts(page, served, "7d", "alpha.example")
    assert page.locator("#chart-domain-deliveries rect.point").count() == 2016
    assert page.locator("#chart-domain-deliveries line.health-mark").count() >= 2
    page.select_option("#window", "1h")
    check_charts(page, served, "1h", "alpha.example")
    assert page.locator("#chart-domain-deliveries rect.point").count() == 12
    expect(page.locator("#history-domain")).to_have_text("alpha.example")

    page.click("#history-watch")
    expect(page.locator("#history-note")).to_contain_text("watching alpha.example")
    listed = httpx.get(f"{served}/api/federation/watched", headers=AUTH).json()
    assert listed == {"domains": ["alpha.example"]}
    assert clock.now // FIVE * FIVE == page.eval_on_selector_all(
        "#chart-domain-deliveries rect.point", "els => Number(els[els.length - 1].dataset.start)"
    )
    assert watched.errors == [] and watched.violations() == []

    page.locator("#history").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True)
    page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
