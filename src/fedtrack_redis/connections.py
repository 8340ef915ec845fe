"""Turn the user's ``redis`` / ``database`` arguments (URL or client) into our own clients.

The library always owns its clients: a ``redis.Redis`` passed in only lends its
connection settings, so we can decode replies as text and run pub/sub and background
threads without disturbing the caller's pool.
"""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ConfigurationError

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


def redis_client(source: str | redis.Redis) -> redis.Redis:
    """A text-decoding client of our own for a Redis URL or an existing client."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.01), 2)
    if isinstance(source, str):
        try:
            return redis.Redis.from_url(
                source,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                health_check_interval=15,
                retry=retry,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {source!r}: {exc}") from None
    if isinstance(source, redis.Redis):
        pool = source.connection_pool
        kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        kwargs["decode_responses"] = True
        kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        return redis.Redis(connection_pool=new_pool, retry=retry)
    raise ConfigurationError(f"redis must be a URL or a redis.Redis, got {type(source).__name__}")


def database_engine(source: str | sa.Engine) -> sa.Engine:
    """An Engine for a SQLAlchemy URL (PostgreSQL via psycopg 3, or SQLite), or the Engine given."""
    if isinstance(source, sa.Engine):
        return source
    if not isinstance(source, str):
        raise ConfigurationError(
            f"database must be a URL or a SQLAlchemy Engine, got {type(source).__name__}"
        )
    try:
        url = sa.make_url(source)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {source!r}: {exc}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    backend = url.get_backend_name()
    if backend == "sqlite":
        return sa.create_engine(url, connect_args={"timeout": 30})
    if backend == "postgresql":
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args={"connect_timeout": 5},
        )
    raise ConfigurationError(
        f"unsupported database {backend!r}: use postgresql+psycopg:// or sqlite://"
    )
