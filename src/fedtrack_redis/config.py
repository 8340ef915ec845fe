"""Settings from the environment (§6), checked once at start with one clear line per error.

The library reads these only in `global_tracker()` / `global_policy()` and in the CLI;
classes take explicit arguments.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .domain import normalize_domain
from .errors import ConfigurationError, InvalidDomainError
from .keys import validate_namespace
from .redact import MASK, redact_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///fedtrack.sqlite3"
_SECRET_FIELD = re.compile(r"token|password|secret", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """Every §6 setting, validated."""

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    namespace: str = "default"
    local_domain: str = ""
    push_interval: float = 1.0
    flush_interval: float = 30.0
    admin_token: str | None = None
    #: Raw ``FEDTRACK_ADMIN_TOKENS`` ("name:token[:read],…"); `api.tokens` parses both.
    admin_tokens: str | None = None

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
        return cls(
            redis_url=_url(
                env, "FEDTRACK_REDIS_URL", DEFAULT_REDIS_URL, ("redis", "rediss", "unix")
            ),
            database_url=_url(
                env, "FEDTRACK_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "sqlite")
            ),
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
        )


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


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    scheme = value.split("://", 1)[0].split("+", 1)[0].lower() if "://" in value else ""
    if scheme not in schemes:
        raise ConfigurationError(
            f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)},"
            f" got {value!r}"
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
