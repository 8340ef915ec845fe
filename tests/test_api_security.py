"""The admin API's safety (docs/safety.md) against real Redis and PostgreSQL: named and read-only
tokens, the caller's actor, the wrong-token limiter, security headers on every response,
the /docs page, and error bodies and logs without driver text or passwords."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fedtrack_redis import ConfigurationError
from fedtrack_redis.api.app import create_app
from fedtrack_redis.api.limiter import FailureLimiter
from fedtrack_redis.config import Settings
from fedtrack_redis.errors import BackendUnavailableError
from proxy import CuttingProxy
from servers import free_port

ADMIN = "admin-token-0123456789abcdefghijklmnop"
OPS = "ops-token-0123456789abcdefghijklmnopqrs"
VIEW = "view-token-0123456789abcdefghijklmnopq"
WRONG = "wrong-token-0123456789abcdefghijklmnop"
SECRET = "s3cretpass"
UNREACHABLE_DATABASE = f"postgresql+psycopg://fedtrack:{SECRET}@127.0.0.1:1/x"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(migrated_postgres_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        local_domain="mail.example",
        admin_token=ADMIN,
        admin_tokens=f"ops:{OPS},viewer:{VIEW}:read",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    app = create_app(settings, limiter=FailureLimiter(clock=clock))
    with TestClient(app, client=("198.51.100.7", 40000)) as test_client:
        yield test_client


# -- tokens and scopes ---------------------------------------------------------------


def test_every_named_token_opens_the_api_and_says_who_it_is(client: TestClient) -> None:
    for token, name, scope in (
        (ADMIN, "admin", "admin"),
        (OPS, "ops", "admin"),
        (VIEW, "viewer", "read"),
    ):
        response = client.get("/api/federation/whoami", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {
            "token": name,
            "scope": scope,
            "actor": f"api:{name}@198.51.100.7",
        }
        assert client.get("/api/federation/settings", headers=bearer(token)).status_code == 200
        assert client.get("/metrics", headers=bearer(token)).status_code == 200


def test_the_actor_names_the_peer_address(client: TestClient) -> None:
    other = TestClient(client.app, client=("2001:db8::5", 1234))  # same app, another peer
    assert other.get("/api/federation/whoami", headers=bearer(OPS)).json()["actor"] == (
        "api:ops@2001:db8::5"
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/federation/settings", {"policy": "REJECT"}),
        ("PUT", "/api/federation/settings", {"enabled": False}),
        ("POST", "/api/federation/rules", {"domains": ["spam.example"]}),
        ("DELETE", "/api/federation/rules", {"domains": ["kept.example"]}),
    ],
)
def test_a_read_token_cannot_change_anything(
    client: TestClient, method: str, path: str, body: object
) -> None:
    client.post("/api/federation/rules", json={"domains": ["kept.example"]}, headers=bearer(OPS))
    before = (
        client.get("/api/federation/settings", headers=bearer(VIEW)).json(),
        client.get("/api/federation/rules", headers=bearer(VIEW)).json(),
    )
    response = client.request(method, path, json=body, headers=bearer(VIEW))
    assert response.status_code == 403
    assert response.json()["detail"] == "the token 'viewer' is read-only: it cannot change anything"
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    after = (
        client.get("/api/federation/settings", headers=bearer(VIEW)).json(),
        client.get("/api/federation/rules", headers=bearer(VIEW)).json(),
    )
    assert after == before
    # The same change with a full token goes through.
    assert client.request(method, path, json=body, headers=bearer(OPS)).status_code == 200


def test_a_wrong_token_says_invalid_token(client: TestClient) -> None:
    response = client.get("/api/federation/settings", headers=bearer(WRONG))
    assert response.status_code == 403
    assert response.json()["detail"] == "wrong bearer token"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("admin", "named", "variable"),
    [
        ("short", None, "FEDTRACK_ADMIN_TOKEN"),
        (ADMIN, "ops:0123456789012345678901234567890", "FEDTRACK_ADMIN_TOKENS"),
        (None, None, "FEDTRACK_ADMIN_TOKEN"),
    ],
)
def test_the_app_refuses_to_start_with_a_bad_token(
    settings: Settings, admin: str | None, named: str | None, variable: str
) -> None:
    bad = Settings(
        redis_url=settings.redis_url,
        database_url=settings.database_url,
        admin_token=admin,
        admin_tokens=named,
    )
    with pytest.raises(ConfigurationError) as info:
        create_app(bad)
    assert str(info.value).startswith(f"{variable}: ")
    assert "0123456789012345678901234567890" not in str(info.value)


# -- the wrong-token limiter ---------------------------------------------------------------


def test_ten_wrong_tokens_block_the_address_even_with_the_right_token(
    client: TestClient, clock: Clock
) -> None:
    for _ in range(20):  # requests without a token are not counted
        assert client.get("/api/federation/settings").status_code == 401
    for attempt in range(10):
        response = client.get("/api/federation/status", headers=bearer(WRONG + str(attempt)))
        assert response.status_code == 403
        clock.now += 1
    blocked = client.get("/api/federation/settings", headers=bearer(ADMIN))
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "50"  # the first failure leaves the window in 50 s
    assert blocked.json()["detail"] == "too many wrong tokens from 198.51.100.7; retry in 50 s"
    assert (
        client.put(
            "/api/federation/settings", json={"policy": "REJECT"}, headers=bearer(OPS)
        ).status_code
        == 429
    )
    assert client.get("/metrics", headers=bearer(VIEW)).status_code == 429
    # While blocked, more wrong tokens are not counted (they never reach the check).
    assert client.get("/api/federation/status", headers=bearer(WRONG)).status_code == 429
    # Requests without a token still say what is missing; open routes stay open.
    assert client.get("/api/federation/settings").status_code == 401
    assert client.get("/healthz").status_code == 200
    # Another address is not affected.
    other = TestClient(client.app, client=("198.51.100.8", 40000))
    assert other.get("/api/federation/settings", headers=bearer(ADMIN)).status_code == 200
    clock.now += 30
    assert (
        client.get("/api/federation/settings", headers=bearer(ADMIN)).headers["retry-after"] == "20"
    )
    clock.now += 20
    response = client.get("/api/federation/settings", headers=bearer(ADMIN))
    assert response.status_code == 200
    assert response.json()["policy"] == "ACCEPT"  # the blocked PUT changed nothing


def test_the_limit_is_ten_within_sixty_seconds(client: TestClient, clock: Clock) -> None:
    for _ in range(9):
        client.get("/api/federation/status", headers=bearer(WRONG))
        clock.now += 7  # 9 failures over 63 s: never 10 within 60 s
    client.get("/api/federation/status", headers=bearer(WRONG))
    assert client.get("/api/federation/status", headers=bearer(ADMIN)).status_code == 200


# -- security headers -------------------------------------------------------------------------

COMMON = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def _directives(policy: str) -> dict[str, str]:
    parts = [p.strip().split(" ", 1) for p in policy.split(";") if p.strip()]
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/docs", None, 200),
        ("GET", "/", None, 200),
        ("GET", "/dashboard.css", None, 200),
        ("GET", "/api/federation/settings", ADMIN, 200),
        ("GET", "/metrics", ADMIN, 200),
        ("GET", "/api/federation/settings", None, 401),
        ("GET", "/api/federation/settings", WRONG, 403),
        ("PUT", "/api/federation/settings", VIEW, 403),
        ("GET", "/api/federation/servers/unknown.example", ADMIN, 404),
        ("GET", "/api/federation/servers?limit=0", ADMIN, 422),
        ("GET", "/api/federation/check/bad%20name", ADMIN, 400),
        ("POST", "/healthz", None, 405),
        ("GET", "/nothing-here", None, 404),
        ("GET", "/redoc", None, 404),
    ],
)
def test_every_response_carries_the_security_headers(
    client: TestClient, method: str, path: str, token: str | None, status: int
) -> None:
    headers = bearer(token) if token else {}
    response = client.request(method, path, headers=headers, json={"policy": "REJECT"})
    assert response.status_code == status
    for name, value in COMMON.items():
        assert response.headers[name] == value
    policy = _directives(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["default-src"] == "'none'"
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "unsafe-eval" not in response.headers["content-security-policy"]
    if path not in ("/", "/docs"):
        assert "script-src" not in policy
        assert "style-src" not in policy


def test_the_dashboard_policy_allows_exactly_its_inline_script(client: TestClient) -> None:
    response = client.get("/")
    policy = _directives(response.headers["content-security-policy"])
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy == {
        "default-src": "'none'",
        "script-src": f"'sha256-{digest}'",
        "style-src": "'self'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
    }
    assert "<style" not in response.text  # styles come from the served stylesheet
    assert "style=" not in response.text
    assert re.search(r"<script[^>]+src=", response.text) is None
    assert '<link rel="stylesheet" href="/dashboard.css">' in response.text
    css = client.get("/dashboard.css")
    assert css.headers["content-type"].startswith("text/css")
    assert "#token-dialog" in css.text


def test_docs_is_a_page_of_our_own_without_script_or_cdn(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.headers["content-type"].startswith("text/html")
    assert _directives(response.headers["content-security-policy"]) == {
        "default-src": "'none'",
        "style-src": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    page = response.text
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page
    assert "cdn" not in page.lower()
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in page
    assert "GET /api/federation/whoami</code> · <b>token</b>" in page
    assert "GET /healthz</code></h2>" in page  # no token
    assert '<a href="/openapi.json">' in page


def test_a_server_error_carries_the_headers_and_no_detail(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"driver said {SECRET}")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    for name, value in COMMON.items():
        assert response.headers[name] == value
    assert _directives(response.headers["content-security-policy"])["default-src"] == "'none'"


# -- no driver text, no password ------------------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    return "\n".join(handler.format(record) for record in caplog.records)


def test_redis_down_503_names_no_driver_text_nor_password(
    migrated_postgres_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    redis_url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    settings = Settings(
        redis_url=redis_url,
        database_url=migrated_postgres_url,
        namespace=namespace,
        admin_token=ADMIN,
    )
    with TestClient(create_app(settings)) as down:
        bodies = [
            down.get("/api/federation/servers", headers=bearer(ADMIN)),
            down.get("/api/federation/servers/a.example", headers=bearer(ADMIN)),
            down.get("/api/federation/status", headers=bearer(ADMIN)),
        ]
        health = down.get("/healthz")
    assert health.status_code == 503
    assert bodies[0].json() == {
        "detail": "service unavailable: reading the stats (ConnectionError)"
    }
    for response in [*bodies, health]:
        for name, value in COMMON.items():
            assert response.headers[name] == value
    for response in bodies:
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert detail.startswith("service unavailable: ")
        for leak in (SECRET, "Error ", "refused", "127.0.0.1", "connecting"):
            assert leak not in detail
    logs = _logged(caplog)
    assert SECRET not in logs
    assert "Redis redis://:***@127.0.0.1:" in logs  # the log names the service, redacted


def test_database_lost_mid_run_503_names_no_driver_text_nor_password(
    migrated_postgres_url: str, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    real = sa.make_url(migrated_postgres_url)
    secret = real.password or SECRET  # trust auth ignores it; a configured one is kept
    proxy = CuttingProxy(real.port or 5432)
    database_url = real.set(host="127.0.0.1", port=proxy.port, password=secret).render_as_string(
        hide_password=False
    )
    settings = Settings(
        redis_url=redis_url, database_url=database_url, namespace=namespace, admin_token=ADMIN
    )
    try:
        with TestClient(create_app(settings)) as client:
            before = client.get("/healthz").json()
            assert (before["redis"], before["database"]) == ("ok", "ok")
            proxy.close()
            change = client.put(
                "/api/federation/settings", json={"policy": "REJECT"}, headers=bearer(ADMIN)
            )
            health = client.get("/healthz")
    finally:
        proxy.close()
    assert (health.json()["redis"], health.json()["database"]) == ("ok", "unavailable")
    assert change.status_code == 503
    detail = change.json()["detail"]
    assert detail.startswith("service unavailable: database unavailable while ")
    assert detail.endswith("(OperationalError)")
    for leak in (secret, "connection", "127.0.0.1", str(proxy.port), "SQL", "sqlalche.me"):
        assert leak not in detail
    logs = _logged(caplog)
    assert secret not in logs
    assert "database postgresql+psycopg://" in logs and ":***@127.0.0.1:" in logs


def test_an_unreachable_database_at_start_never_shows_the_password(
    redis_url: str,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedtrack_redis.policy import writer

    monkeypatch.setattr(writer, "INIT_DATABASE_PATIENCE", 0.5)  # start-up retries: not 30 s
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        redis_url=redis_url,
        database_url=UNREACHABLE_DATABASE,
        namespace=namespace,
        admin_token=ADMIN,
    )
    assert SECRET not in repr(settings)
    with pytest.raises(BackendUnavailableError) as info, TestClient(create_app(settings)):
        pass
    assert SECRET not in str(info.value)
    assert SECRET not in _logged(caplog)


def test_bad_input_messages_are_redacted_too(client: TestClient) -> None:
    # A library message quoting a value that holds a URL with a password (here: an
    # invalid domain) comes back with the password replaced.
    response = client.post(
        "/api/federation/rules",
        json={"domains": [f"redis://u:{SECRET}@h"]},
        headers=bearer(ADMIN),
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid rule 'redis://u:***@h'")
    assert SECRET not in response.text
