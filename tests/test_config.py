"""Settings from the environment: defaults, valid values, one-line errors (unit)."""

from __future__ import annotations

import pytest

from fedtrack_redis.config import Settings
from fedtrack_redis.errors import ConfigurationError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url is None  # never a database nobody named
    assert settings.database_id is None
    assert settings.wait_replicas == 0
    assert settings.namespace == "default"
    assert settings.local_domain == ""
    assert settings.push_interval == 1.0
    assert settings.flush_interval == 30.0
    assert settings.admin_token is None


def test_reads_every_variable() -> None:
    settings = Settings.from_env(
        {
            "FEDTRACK_REDIS_URL": "redis://cache:6380/2",
            "FEDTRACK_DATABASE_URL": "postgresql+psycopg://u@db/fed",
            "FEDTRACK_NAMESPACE": "eu-west_1",
            "FEDTRACK_LOCAL_DOMAIN": "Mail.Example.",
            "FEDTRACK_PUSH_INTERVAL": "0.25",
            "FEDTRACK_FLUSH_INTERVAL": "10",
            "FEDTRACK_ADMIN_TOKEN": "s3cret",
        }
    )
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.database_url == "postgresql+psycopg://u@db/fed"
    assert settings.namespace == "eu-west_1"
    assert settings.local_domain == "mail.example"
    assert settings.push_interval == 0.25
    assert settings.flush_interval == 10.0
    assert settings.admin_token == "s3cret"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEDTRACK_REDIS_URL", "http://cache:6379"),
        ("FEDTRACK_REDIS_URL", "cache:6379"),
        ("FEDTRACK_DATABASE_URL", "mysql://db/fed"),
        ("FEDTRACK_NAMESPACE", "bad{tag}"),
        ("FEDTRACK_NAMESPACE", "has:colon"),
        ("FEDTRACK_NAMESPACE", "x" * 65),
        ("FEDTRACK_LOCAL_DOMAIN", "not a domain"),
        ("FEDTRACK_PUSH_INTERVAL", "fast"),
        ("FEDTRACK_PUSH_INTERVAL", "0"),
        ("FEDTRACK_PUSH_INTERVAL", "-1"),
        ("FEDTRACK_PUSH_INTERVAL", "nan"),
        ("FEDTRACK_FLUSH_INTERVAL", "inf"),
        ("FEDTRACK_REDIS_URL", "redis+sentinel://127.0.0.1:26379"),
        ("FEDTRACK_REDIS_URL", "redis+cluster://127.0.0.1:7000/3"),
        ("FEDTRACK_REDIS_URL", "redis+cluster://127.0.0.1:x"),
        ("FEDTRACK_REDIS_URL", "redis://127.0.0.1:6379/0?wait_replicas=many"),
        ("FEDTRACK_REDIS_URL", "redis+sentinel://h:1/svc?bogus=1"),
        ("FEDTRACK_REDIS_WAIT_REPLICAS", "-1"),
        ("FEDTRACK_DATABASE_ID", "not-an-id"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message
    assert "\n" not in message


def test_a_command_that_needs_the_database_names_the_variable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigurationError) as info:
        settings.require_database()
    assert "FEDTRACK_DATABASE_URL" in str(info.value)
    assert "\n" not in str(info.value)
    named = Settings.from_env({"FEDTRACK_DATABASE_URL": "sqlite:///x.db"})
    assert named.require_database() == "sqlite:///x.db"


def test_engine_variables() -> None:
    settings = Settings.from_env(
        {
            "FEDTRACK_REDIS_URL": "redis+sentinel://:pw@s1:26379,s2:26379/fedtrack?db=2",
            "FEDTRACK_REDIS_WAIT_REPLICAS": "1",
            "FEDTRACK_DATABASE_ID": "0123456789ABCDEF0123456789abcdef",
        }
    )
    assert settings.wait_replicas == 1
    assert settings.database_id == "0123456789abcdef0123456789abcdef"


def test_repr_hides_passwords_and_tokens() -> None:
    settings = Settings.from_env(
        {
            "FEDTRACK_REDIS_URL": "redis://:redispass@cache:6379/0",
            "FEDTRACK_DATABASE_URL": "postgresql+psycopg://fedtrack:dbpass@db/fed",
            "FEDTRACK_ADMIN_TOKEN": "t" * 40,
        }
    )
    shown = repr(settings)
    for secret in ("redispass", "dbpass", "t" * 40):
        assert secret not in shown
    assert "cache:6379" in shown
