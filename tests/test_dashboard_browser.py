"""The dashboard in a real browser (Debian's Chromium driven by Playwright): it loads with
the token, shows a domain's numbers equal to the API's, adds rules with their fields from
the page, filters the rules table, explains why a domain is refused, shows the audit log;
a read token sees the page with its changes disabled; and its Content-Security-Policy
never blocks anything the page does (a policy with a wrong hash is seen to block)."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from fedtrack_redis import FederationTracker, Flusher, PolicyStore
from fedtrack_redis.api import dashboard
from fedtrack_redis.api.app import create_app
from fedtrack_redis.api.security import dashboard_policy
from fedtrack_redis.config import Settings
from servers import free_port, wait_for

TOKEN = "browser-test-token-0123456789abcdefghij"
READ_TOKEN = "browser-read-token-0123456789abcdefghij"
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


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
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
def settings(migrated_postgres_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=TOKEN,
        admin_tokens=f"viewer:{READ_TOKEN}:read",
    )


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    with serving(settings) as url:
        yield url


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


#: Installed before any script of the page runs: every CSP violation the page raises.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.effectiveDirective} blocked ${event.blockedURI}`);
});
"""


class Watched:
    """A page and what it reported: CSP violations (events and console) and page errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", lambda message: self.console.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def violations(self) -> list[str]:
        events: list[str] = self.page.evaluate("window.__cspViolations || []")
        logged = [text for text in self.console if "Content Security Policy" in text]
        return events + logged


@pytest.fixture
def watched(page: Page) -> Watched:
    return Watched(page)


@pytest.fixture
def tracker(
    redis_url: str, namespace: str, migrated_postgres_url: str
) -> Iterator[FederationTracker]:
    """A live worker: its in-flight message stays counted while it runs. A flusher leader
    hydrates the namespace first and flushes once after the push (which refreshes the top
    lists the anomalies come from)."""
    flusher = Flusher(redis_url, migrated_postgres_url, namespace=namespace, interval=3600)
    flusher.flush_once()
    with FederationTracker(redis_url, namespace=namespace) as live:
        for _ in range(40):
            live.record_success("alpha.example", 120, "HTTPS")
        for _ in range(7):
            live.record_failure("alpha.example", "SMTP")
        live.record_success("alpha.example", 30)
        for _ in range(12):
            live.record_failure("broken.example", "HTTPS")
        live.increment_queue("broken.example")
        live.push()
        flusher.flush_once()
        yield live
    flusher.stop()


@pytest.mark.slow
def test_dashboard_matches_the_api_and_adds_a_rule(
    served: str,
    watched: Watched,
    tracker: FederationTracker,
    redis_url: str,
    namespace: str,
    migrated_postgres_url: str,
) -> None:
    page = watched.page
    response = page.goto(served + "/")
    assert response is not None
    assert "script-src 'sha256-" in response.headers["content-security-policy"]
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
    expect(page.locator("#engine")).to_have_text("single · no replicas")

    page.fill("#rule-input", "Blocked.Example")
    page.click("#rule-add")
    expect(page.locator('#rules tr[data-rule="blocked.example"]')).to_be_visible()
    with PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as store:
        assert store.has_rule("blocked.example")

    # A rule with its fields: a subdomain block for 7 days, with a reason.
    page.fill("#rule-input", ".Spam.Example")
    page.select_option("#rule-effect", "block")
    page.select_option("#rule-expiry", "604800")
    page.fill("#rule-reason", "phishing waves")
    page.fill("#rule-comment", "ticket 4711")
    page.click("#rule-add")
    spam = page.locator('#rules tr[data-rule=".spam.example"]')
    expect(spam).to_be_visible()
    cells = spam.locator("td").all_inner_texts()
    assert cells[:4] == [".spam.example", "subdomains", "block", "phishing waves"]
    assert cells[4].endswith("UTC") and cells[4] != "never"
    with PolicyStore(migrated_postgres_url, redis_url, namespace=namespace) as store:
        rule = store.get_rule(".spam.example")
        assert rule is not None and rule.private_comment == "ticket 4711"
        assert rule.expires_at is not None and rule.created_by == "api:admin@127.0.0.1"

    # The filter narrows the table; the count stays the total.
    page.fill("#rule-filter", "phishing")
    expect(page.locator("#rules tbody tr")).to_have_count(1)
    expect(page.locator("#rule-count")).to_have_text("2")
    page.fill("#rule-filter", "")
    expect(page.locator("#rules tbody tr")).to_have_count(2)

    # The check says why a domain is refused: the deciding rule and its reason.
    page.fill("#check-input", "mail.SPAM.example")
    page.click("#check-submit")
    verdict = page.locator("#check-verdict")
    expect(verdict).to_contain_text("mail.spam.example: REFUSED")
    expect(verdict).to_contain_text("blocked by a block rule .spam.example")
    expect(page.locator('#check-result [data-matched=".spam.example"]')).to_contain_text(
        "phishing waves"
    )

    # The audit log names the token and the address of every change.
    audit = page.locator('#audit tr[data-action="add"]')
    expect(audit).to_have_count(2)
    assert "api:admin@127.0.0.1" in audit.first.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.click('#rules tr[data-rule="blocked.example"] button')
    expect(page.locator('#rules tr[data-rule="blocked.example"]')).to_have_count(0)
    expect(page.locator('#audit tr[data-action="remove"]')).to_contain_text("blocked.example")
    expect(page.locator("#caller")).to_have_text("token admin")
    assert watched.violations() == []
    assert watched.errors == []


@pytest.mark.slow
def test_a_wrong_token_is_asked_again(served: str, watched: Watched) -> None:
    page = watched.page
    page.goto(served + "/")
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#error")).to_have_text("the admin token was refused")
    expect(page.locator("#token-dialog")).to_be_visible()
    assert watched.violations() == []


@pytest.mark.slow
def test_a_read_token_sees_the_page_with_changes_disabled(
    served: str, watched: Watched, tracker: FederationTracker
) -> None:
    page = watched.page
    page.goto(served + "/")
    page.fill("#token-input", READ_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator('#servers tr[data-domain="alpha.example"]')).to_be_visible(timeout=10_000)
    expect(page.locator("#caller")).to_have_text("token viewer (read-only)")
    controls = ("#rule-add", "#rule-input", "#rule-effect", "#rule-reason", "#policy-accept")
    for control in (*controls, "#toggle-enabled"):
        expect(page.locator(control)).to_be_disabled()
    # Even a change sent by hand keeps the token and shows the server's refusal.
    page.evaluate("change('PUT', '/api/federation/settings', { policy: 'REJECT' })")
    expect(page.locator("#error")).to_have_text(
        "the token 'viewer' is read-only: it cannot change anything"
    )
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#policy")).to_have_text("ACCEPT")
    assert watched.violations() == []


@pytest.mark.slow
def test_a_policy_with_the_wrong_hash_is_seen_to_block_the_script(
    settings: Settings, watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: with a hash of other text, Chromium refuses the script."""
    monkeypatch.setattr(
        dashboard,
        "content_security_policy",
        lambda: dashboard_policy(dashboard.script_hashes("<script>other();</script>")),
    )
    with serving(settings) as url:
        watched.page.goto(url + "/")
        wait_for(watched.violations, 10, "Chromium to report the blocked script")
    assert any("script-src" in v for v in watched.violations())
    expect(watched.page.locator("#token-dialog")).to_be_hidden()  # the script never ran
