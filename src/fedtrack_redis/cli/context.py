"""What every command shares: validated settings and lazily opened library objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..health.admin import HealthAdmin
    from ..policy.store import PolicyStore
    from ..reads import StatsReader


@dataclass
class CliContext:
    """Created by the top-level group; commands call `policy()` / `stats()` when they need them."""

    settings: Settings
    _policy: PolicyStore | None = field(default=None, init=False)
    _stats: StatsReader | None = field(default=None, init=False)
    _health: HealthAdmin | None = field(default=None, init=False)
    _audit_db: sa.Engine | None = field(default=None, init=False)

    def require_redis(self) -> None:
        """Fail fast (exit 1, one line) when Redis does not answer, before changing anything."""
        import redis

        from ..engine import RedisEngine
        from ..errors import BackendUnavailableError

        engine = RedisEngine.open(self.settings.redis_url)
        try:
            engine.client.ping()
        except redis.RedisError as exc:
            raise BackendUnavailableError("Redis does not answer") from exc
        finally:
            engine.close()

    @property
    def actor(self) -> str:
        """The audit log's name for this command's changes: ``cli:<user>@<host>``."""
        return cli_actor()

    def policy(self) -> PolicyStore:
        if self._policy is None:
            from ..policy.store import PolicyStore

            self.require_redis()
            self._policy = PolicyStore(
                self.settings.require_database(),
                self.settings.redis_url,
                namespace=self.settings.namespace,
                database_id=self.settings.database_id,
            ).init()
        return self._policy

    def stats(self) -> StatsReader:
        if self._stats is None:
            from ..reads import StatsReader

            self.require_redis()
            self._stats = StatsReader(self.settings.redis_url, namespace=self.settings.namespace)
        return self._stats

    def health(self) -> HealthAdmin:
        if self._health is None:
            from ..health.admin import HealthAdmin

            self._health = HealthAdmin(self.stats().engine, self.stats().keys)
        return self._health

    def audit_database(self) -> sa.Engine | None:
        """The database the audit log lives in, None when FEDTRACK_DATABASE_URL is unset."""
        if self._audit_db is None and self.settings.database_url:
            from ..connections import database_engine

            self._audit_db = database_engine(self.settings.database_url, pooled=False)
        return self._audit_db

    def close(self) -> None:
        if self._audit_db is not None:
            self._audit_db.dispose()
        if self._policy is not None:
            self._policy.close()
        if self._stats is not None:
            self._stats.close()


def cli_actor() -> str:
    import getpass
    import os
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def current() -> CliContext:
    """The context of the command being run."""
    import click

    context = click.get_current_context().find_object(CliContext)
    assert context is not None, "commands run under the fedtrack group"
    return context
