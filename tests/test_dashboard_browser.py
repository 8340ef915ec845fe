"""The dashboard in a real browser (Debian's Chromium driven by Playwright): it loads with
the token, shows a domain's numbers equal to the API's, and adds a rule from the page."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from fedtrack_redis import FederationTracker, PolicyStore
from fedtrack_redis.api.app import create_app
from fedtrack_redis.config import Settings
from servers import free_port, wait_for

TOKEN = "browser-test-token"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def served(postgres_url: str, redis_url: str, namespace: str) -> Iterator[str]:
    settings = Settings(
        redis_url=redis_url,
        database_url=postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=TOKEN,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "the API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def page() -> Iterator[Page]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (scripts/test.sh installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


@pytest.fixture
def tracker(redis_url: str, namespace: str, postgres_url: str) -> Iterator[FederationTracker]:
    """A live worker: its in-flight message stays counted while it runs."""
    with FederationTracker(redis_url, namespace=namespace, database=postgres_url) as live:
        for _ in range(40):
            live.record_success("alpha.example", 120, "HTTPS")
        for _ in range(7):
            live.record_failure("alpha.example", "SMTP")
        live.record_success("alpha.example", 30)
        for _ in range(12):
            live.record_failure("broken.example", "HTTPS")
        live.increment_queue("broken.example")
        live.push()
        yield live


@pytest.mark.slow
def test_dashboard_matches_the_api_and_adds_a_rule(
    served: str,
    page: Page,
    tracker: FederationTracker,
    redis_url: str,
    namespace: str,
    postgres_url: str,
) -> None:
    page.goto(served + "/")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")

    row = page.locator('#servers tr[data-domain="alpha.example"]')
    expect(row).to_be_visible(timeout=10_000)
    api = httpx.get(
        f"{served}/api/federation/servers/alpha.example",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "alpha.example"
    assert cells[2] == str(api["successful_deliveries"]) == "41"
    assert cells[5] == str(api["failed_smtp"]) == "7"
    assert cells[7] == str(api["inbound_deliveries"]) == "1"
    assert cells[8] == f"{api['mean_latency_ms']:.0f}"
    assert cells[9] == f"{api['p95_ms']:.0f}"
    expect(page.locator('#servers tr[data-domain="broken.example"]')).to_have_class("failing")
    expect(page.locator('[data-total="queued"] b')).to_have_text("1")

    page.fill("#rule-input", "Blocked.Example")
    page.click("#rule-add")
    expect(page.locator('#rules li[data-rule="blocked.example"]')).to_be_visible()
    with PolicyStore(postgres_url, redis_url, namespace=namespace) as store:
        assert store.has_rule("blocked.example")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click('#rules li[data-rule="blocked.example"] button')
    expect(page.locator('#rules li[data-rule="blocked.example"]')).to_have_count(0)


@pytest.mark.slow
def test_a_wrong_token_is_asked_again(served: str, page: Page) -> None:
    page.goto(served + "/")
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#error")).to_have_text("the admin token was refused")
    expect(page.locator("#token-dialog")).to_be_visible()
