"""redact.py: passwords out of URLs, driver text out of "unavailable" lines; and the
settings' repr, which uses them (unit)."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
import redis
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from fedtrack_redis.config import Settings
from fedtrack_redis.errors import (
    BackendUnavailableError,
    ConfigurationError,
    PropagationPendingError,
)
from fedtrack_redis.redact import redact_url, unavailable_reason


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://fedtrack:s3cretpass@127.0.0.1:1/x",
            "postgresql+psycopg://fedtrack:***@127.0.0.1:1/x",
        ),
        ("redis://user:s3cretpass@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("rediss://:s3cretpass@cache:6380/1", "rediss://:***@cache:6380/1"),
        ("unix://:s3cretpass@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        # a host list: the hosts stay readable
        (
            "redis+sentinel://:s3cretpass@h1:26379,h2:26379,h3:26379/mymaster",
            "redis+sentinel://:***@h1:26379,h2:26379,h3:26379/mymaster",
        ),
        (
            "postgresql://fedtrack:s3cretpass@db1:5432,db2:5432/fed?target_session_attrs=any",
            "postgresql://fedtrack:***@db1:5432,db2:5432/fed?target_session_attrs=any",
        ),
        # per-host credentials: everything up to the last "@" is hidden (errs on the safe side)
        ("redis://a:s3cretpass@h1:1,b:0therpass@h2:2/0", "redis://a:***@h2:2/0"),
        # passwords holding characters a URL should have encoded are hidden whole
        ("redis://u:p@ss/w,rd@cache:6379/0", "redis://u:***@cache:6379/0"),
        ("postgresql://fedtrack:s3cr%40t@db/x", "postgresql://fedtrack:***@db/x"),
        # query and keyword passwords
        ("redis://cache:6379/0?password=s3cretpass&db=2", "redis://cache:6379/0?password=***&db=2"),
        (
            "host=db user=fedtrack password=s3cretpass dbname=x",
            "host=db user=fedtrack password=*** dbname=x",
        ),
        ("postgresql://db/x?PASSWORD='s3cret pass'", "postgresql://db/x?PASSWORD=***"),
        # nothing to hide
        ("redis://default@cache:6379/0", "redis://default@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("sqlite:////var/lib/fedtrack.sqlite3", "sqlite:////var/lib/fedtrack.sqlite3"),
        ("no URL here: host:port", "no URL here: host:port"),
        # URLs inside a message, quoted or not
        (
            "FEDTRACK_REDIS_URL: expected redis://, got 'http://u:s3cretpass@cache:6379'",
            "FEDTRACK_REDIS_URL: expected redis://, got 'http://u:***@cache:6379'",
        ),
        (
            "from redis://:a1b2c3d4@r:1/0 to postgresql://u:e5f6g7h8@p/x",
            "from redis://:***@r:1/0 to postgresql://u:***@p/x",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://fedtrack:s3cretpass@127.0.0.1:5432/fed",
        "postgresql://fedtrack:p%40ss@db/x",
        "sqlite:///fedtrack.sqlite3",
        "postgresql+psycopg://fedtrack@db/x",
    ],
)
def test_agrees_with_sqlalchemy_hide_password(url: str) -> None:
    assert redact_url(url) == sa.make_url(url).render_as_string(hide_password=True)


# Passwords as people write them: anything printable but spaces and quotes.
PASSWORDS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="'\"<>`"),
    min_size=1,
    max_size=40,
)


@given(PASSWORDS)
def test_no_password_survives(password: str) -> None:
    for shown in (password, quote_plus(password)):
        url = f"postgresql+psycopg://fedtrack:{shown}@db.example:5432/x"
        assert redact_url(url) == "postgresql+psycopg://fedtrack:***@db.example:5432/x"
        assert redact_url(f"redis://:{shown}@h1:26379,h2:26379/0") == (
            "redis://:***@h1:26379,h2:26379/0"
        )


def _raised(
    outer: BaseException, inner: BaseException | None, suppress: bool = False
) -> BaseException:
    """`outer` as raised ``from inner`` (or ``from None`` after `inner`, with `suppress`)."""
    try:
        try:
            if inner is not None:
                raise inner
            raise outer
        except BaseException as exc:
            if exc is outer:
                raise
            if suppress:
                raise outer from None
            raise outer from exc
    except BaseException as raised:
        return raised


def _operational_error() -> sa.exc.OperationalError:
    orig = ConnectionRefusedError(
        'connection to server at "127.0.0.1", port 1 failed: password "s3cretpass" refused'
    )
    return sa.exc.OperationalError("SELECT secret FROM t", {}, orig)


def test_reason_drops_the_driver_text_and_names_its_class() -> None:
    driver = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    exc = _raised(BackendUnavailableError(f"reading the stats: {driver}"), driver)
    assert unavailable_reason(exc) == "reading the stats (ConnectionError)"


def test_reason_drops_sqlalchemy_text_its_sql_and_the_dbapi_error() -> None:
    wrapped = _operational_error()
    exc = _raised(
        BackendUnavailableError(f"database unavailable while loading the policy: {wrapped.orig}"),
        wrapped,
    )
    reason = unavailable_reason(exc)
    assert reason == "database unavailable while loading the policy (OperationalError)"
    whole = _raised(BackendUnavailableError(f"database unavailable: {wrapped}"), wrapped)
    assert unavailable_reason(whole) == "database unavailable (OperationalError)"


def test_reason_drops_driver_text_in_the_middle_of_the_message() -> None:
    driver = redis.ConnectionError("Connection reset by peer s3cretpass")
    exc = _raised(
        PropagationPendingError(
            f"change committed (version 7) but Redis is unavailable ({driver});"
            " every process applies it once Redis is back"
        ),
        driver,
    )
    assert unavailable_reason(exc) == (
        "change committed (version 7) but Redis is unavailable; every process applies it"
        " once Redis is back (ConnectionError)"
    )


def test_reason_follows_a_context_suppressed_with_from_none() -> None:
    driver = redis.TimeoutError("Timeout connecting to server s3cretpass")
    exc = _raised(BackendUnavailableError(f"Redis does not answer: {driver}"), driver, True)
    assert unavailable_reason(exc) == "Redis does not answer (TimeoutError)"


def test_reason_of_our_own_error_and_of_a_bare_driver_error() -> None:
    assert unavailable_reason(BackendUnavailableError("push: another push did not finish")) == (
        "push: another push did not finish"
    )
    assert unavailable_reason(redis.ConnectionError("refused s3cretpass")) == (
        "unavailable (ConnectionError)"
    )
    assert unavailable_reason(BackendUnavailableError("")) == "unavailable"
    with_url = BackendUnavailableError("cannot reach redis://:s3cretpass@cache:6379/0")
    assert unavailable_reason(with_url) == "cannot reach redis://:***@cache:6379/0"


def test_settings_repr_hides_tokens_and_url_passwords() -> None:
    settings = Settings(
        redis_url="redis://:r3dispass@cache:6379/0",
        database_url="postgresql+psycopg://fedtrack:s3cretpass@127.0.0.1:1/x",
        admin_token="a" * 40,
        admin_tokens=f"ops:{'b' * 40},viewer:{'c' * 40}:read",
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        for secret in ("r3dispass", "s3cretpass", "a" * 40, "b" * 40, "c" * 40, "viewer"):
            assert secret not in text
        assert "postgresql+psycopg://fedtrack:***@127.0.0.1:1/x" in text
        assert "admin_token='***'" in text
        assert "namespace='default'" in text
    assert "admin_token=None" in repr(Settings())


def test_settings_errors_can_be_redacted() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"FEDTRACK_REDIS_URL": "http://u:s3cretpass@cache:6379"})
    assert "FEDTRACK_REDIS_URL" in str(info.value)
    assert "s3cretpass" not in redact_url(str(info.value))
