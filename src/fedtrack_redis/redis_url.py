"""Redis URLs of every engine, parsed and checked: one server, Sentinel, Cluster.

``redis://``, ``rediss://``, ``unix://`` — one server; ``redis+sentinel://[user:pass@]
host:port[,host:port…]/SERVICE[?db=N]`` and ``rediss+sentinel://`` — the master of a
Sentinel service; ``redis+cluster://[user:pass@]host:port[,host:port…]`` and
``rediss+cluster://`` — Redis Cluster. Any may end with ``?wait_replicas=N``. A malformed
URL is one `ConfigurationError` line, its password shown as ``***``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigurationError
from .redact import redact_url

EngineKind = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[EngineKind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL of any engine (`parse_redis_url`)."""

    url: str
    kind: EngineKind
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    wait_replicas: int = 0
    #: The query string of a single-server URL, without ``wait_replicas``.
    query: dict[str, str] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"RedisURL({self.redacted!r})"


def parse_redis_url(url: str, *, default_wait_replicas: int = 0) -> RedisURL:
    """Parse any supported Redis URL; `ConfigurationError` (one line, redacted) otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(str(url))!r}: expected redis://, rediss://,"
            " unix://, redis+sentinel://…/SERVICE or redis+cluster://…"
        )
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in _SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: unknown scheme {scheme!r} (expected redis,"
            " rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster)"
        )
    kind, tls = _SCHEMES[scheme.lower()]
    body, _, query_text = rest.partition("?")
    query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
    wait_replicas = _wait_replicas(url, query.pop("wait_replicas", None), default_wait_replicas)
    if kind == "single":
        return RedisURL(url, kind, tls, wait_replicas=wait_replicas, query=query)
    userinfo, _, location = body.rpartition("@")
    username, password = _credentials(userinfo)
    hosts_text, _, path = location.partition("/")
    hosts = _hosts(url, hosts_text)
    db = _db(url, query.pop("db", None))
    service = urllib.parse.unquote(path.strip("/"))
    if kind == "sentinel" and not service:
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: a sentinel URL names its service:"
            " redis+sentinel://host:port[,host:port…]/SERVICE"
        )
    if kind == "cluster" and (service or db):
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: a cluster URL has no path or database"
            " (Redis Cluster has only database 0)"
        )
    unknown = sorted(set(query) - {"sentinel_username", "sentinel_password"})
    if unknown:
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: unknown option(s) {', '.join(unknown)}"
        )
    return RedisURL(
        url,
        kind,
        tls,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        wait_replicas=wait_replicas,
        query=query,
    )


def _wait_replicas(url: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > 64:
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: wait_replicas must be an integer"
            f" from 0 to 64, got {raw!r}"
        )
    return int(raw)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    return (
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if sep else None,
    )


def _hosts(url: str, text: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        host, sep, port = item.rpartition(":")
        if item.startswith("[") and "]" in item:  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
            sep = ":" if port else ""
        if not sep:
            host, port = item, "26379" if "sentinel" in url.split("://", maxsplit=1)[0] else "6379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"invalid Redis URL {redact_url(url)!r}: expected host:port[,host:port…],"
                f" got {item!r}"
            )
        hosts.append((host, int(port)))
    return tuple(hosts)


def _db(url: str, raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isdigit():
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: db must be an integer")
    return int(raw)
