"""Turn the user's ``database`` argument (URL or Engine) into a SQLAlchemy Engine.

Redis clients come from `engine.RedisEngine` (one factory for every Redis engine).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from .errors import ConfigurationError
from .redact import redact_url


def database_engine(source: str | sa.Engine, *, pooled: bool = True) -> sa.Engine:
    """An Engine for a SQLAlchemy URL (PostgreSQL via psycopg 3, or SQLite), or the Engine given.

    ``pooled=False`` keeps no connection open between uses (a worker's policy store must
    not hold PostgreSQL connections while it only follows the policy).
    """
    if isinstance(source, sa.Engine):
        return source
    if not isinstance(source, str):
        raise ConfigurationError(
            f"database must be a URL or a SQLAlchemy Engine, got {type(source).__name__}"
        )
    try:
        url = sa.make_url(source)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            f"invalid database URL {redact_url(source)!r}: expected"
            " postgresql+psycopg://user@host/db or sqlite:///path"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    backend = url.get_backend_name()
    if backend == "sqlite":
        return sa.create_engine(url, connect_args={"timeout": 30})
    if backend == "postgresql":
        if not pooled:
            return sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            pool_recycle=300,
            connect_args={"connect_timeout": 5},
        )
    raise ConfigurationError(
        f"unsupported database {backend!r}: use postgresql+psycopg:// or sqlite://"
    )
