"""Settings from the environment: defaults, valid values, one-line errors (unit)."""

from __future__ import annotations

import pytest

from fedtrack_redis.config import Settings
from fedtrack_redis.errors import ConfigurationError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url.startswith("sqlite:///")
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
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message
    assert "\n" not in message
