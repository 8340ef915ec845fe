"""Settings from the environment (the README's configuration table), checked once at start
with one clear line per error.

The library reads these only in `global_tracker()` / `global_policy()`, the CLI and the
API; classes take explicit arguments. There is no default database: a process that needs
one and was not told which fails at start naming ``FEDTRACK_DATABASE_URL`` (G11), rather
than quietly using a SQLite file of its own.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from .domain import normalize_domain
from .errors import ConfigurationError, InvalidDomainError
from .identity import validate_identity
from .keys import validate_namespace
from .redact import MASK, redact_url
from .redis_url import parse_redis_url

if TYPE_CHECKING:
    from .health.policy import HealthPolicy
    from .health.webhooks import Webhook

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_SECRET_FIELD = re.compile(r"token|password|secret", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Every ``FEDTRACK_*`` setting, validated. ``database_url`` is None when none was given."""

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str | None = None
    namespace: str = "default"
    local_domain: str = ""
    push_interval: float = 1.0
    flush_interval: float = 30.0
    admin_token: str | None = None
    #: Raw ``FEDTRACK_ADMIN_TOKENS`` ("name:token[:read],…"); `api.tokens` parses both.
    admin_tokens: str | None = None
    database_id: str | None = None
    wait_replicas: int = 0
    #: ``FEDTRACK_HEALTH_FAILURES``, ``FEDTRACK_BACKOFF_MIN`` / ``_MAX``,
    #: ``FEDTRACK_UNAVAILABLE_DAYS``, ``FEDTRACK_HEALTH_PERIOD``; None when none is set.
    health: HealthPolicy | None = None
    #: ``FEDTRACK_WEBHOOK_URLS`` (comma-separated) signed with ``FEDTRACK_WEBHOOK_SECRET``.
    webhooks: tuple[Webhook, ...] = field(default=())

    def __repr__(self) -> str:
        """Every field, with URL passwords redacted and tokens hidden."""
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str) and _SECRET_FIELD.search(item.name):
                value = MASK
            elif isinstance(value, str) and item.name.endswith("_url"):
                value = redact_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``FEDTRACK_*`` variables; raise `ConfigurationError` on a bad value."""
        env = os.environ if environ is None else environ
        wait_replicas = _wait_replicas(env.get("FEDTRACK_REDIS_WAIT_REPLICAS", ""))
        redis_url = env.get("FEDTRACK_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
        try:
            parse_redis_url(redis_url, default_wait_replicas=wait_replicas)
        except ConfigurationError as exc:
            raise ConfigurationError(f"FEDTRACK_REDIS_URL: {exc}") from None
        database_id = env.get("FEDTRACK_DATABASE_ID", "").strip()
        return cls(
            redis_url=redis_url,
            database_url=_database_url(env.get("FEDTRACK_DATABASE_URL", "")),
            namespace=_namespace(env.get("FEDTRACK_NAMESPACE", "default")),
            local_domain=_local_domain(env.get("FEDTRACK_LOCAL_DOMAIN", "")),
            push_interval=positive_seconds(
                "FEDTRACK_PUSH_INTERVAL", env.get("FEDTRACK_PUSH_INTERVAL"), 1.0
            ),
            flush_interval=positive_seconds(
                "FEDTRACK_FLUSH_INTERVAL", env.get("FEDTRACK_FLUSH_INTERVAL"), 30.0
            ),
            admin_token=env.get("FEDTRACK_ADMIN_TOKEN") or None,
            admin_tokens=env.get("FEDTRACK_ADMIN_TOKENS") or None,
            database_id=validate_identity(database_id) if database_id else None,
            wait_replicas=wait_replicas,
            health=_health(env),
            webhooks=_webhooks(env),
        )

    def require_database(self) -> str:
        """The database URL, or `ConfigurationError` naming the variable (exit 2 in the CLI)."""
        if not self.database_url:
            raise ConfigurationError(
                "FEDTRACK_DATABASE_URL is not set: this command needs the namespace's database"
                " (postgresql+psycopg://user@host/db, or sqlite:///path for small installs)"
            )
        return self.database_url


def wait_replicas_default(environ: Mapping[str, str] | None = None) -> int:
    """``FEDTRACK_REDIS_WAIT_REPLICAS`` (the default of a URL's ``?wait_replicas=``), else 0."""
    env = os.environ if environ is None else environ
    return _wait_replicas(env.get("FEDTRACK_REDIS_WAIT_REPLICAS", ""))


def _wait_replicas(raw: str) -> int:
    raw = raw.strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 64:
        raise ConfigurationError(
            f"FEDTRACK_REDIS_WAIT_REPLICAS: expected an integer from 0 to 64, got {raw!r}"
        )
    return int(raw)


def positive_seconds(name: str, raw: str | float | None, default: float) -> float:
    """Parse a positive, finite number of seconds (at most one day)."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0 or value > 86_400:
        raise ConfigurationError(f"{name}: expected seconds in (0, 86400], got {raw!r}")
    return value


def _database_url(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    scheme = value.split("://", 1)[0].split("+", 1)[0].lower() if "://" in value else ""
    if scheme not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            "FEDTRACK_DATABASE_URL: expected a URL starting with postgresql:// or sqlite://,"
            f" got {redact_url(value)!r}"
        )
    return value


def _namespace(value: str) -> str:
    try:
        return validate_namespace(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"FEDTRACK_NAMESPACE: {exc}") from None


def _local_domain(value: str) -> str:
    if not value.strip():
        return ""
    try:
        return normalize_domain(value)
    except InvalidDomainError as exc:
        raise ConfigurationError(f"FEDTRACK_LOCAL_DOMAIN: {exc}") from None


def _health(env: Mapping[str, str]) -> HealthPolicy | None:
    from .health.policy import HealthPolicy

    return HealthPolicy.from_env(env)


def _webhooks(env: Mapping[str, str]) -> tuple[Webhook, ...]:
    from .health.webhooks import Webhook

    urls = [url.strip() for url in env.get("FEDTRACK_WEBHOOK_URLS", "").split(",") if url.strip()]
    if not urls:
        return ()
    secret = env.get("FEDTRACK_WEBHOOK_SECRET", "")
    if not secret:
        raise ConfigurationError(
            "FEDTRACK_WEBHOOK_SECRET: required with FEDTRACK_WEBHOOK_URLS (receivers check"
            " the signature)"
        )
    try:
        return tuple(Webhook(url, secret) for url in urls)
    except ConfigurationError as exc:
        raise ConfigurationError(f"FEDTRACK_WEBHOOK_URLS: {exc}") from None
