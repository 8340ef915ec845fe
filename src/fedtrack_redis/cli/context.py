"""What every command shares: validated settings and lazily opened library objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Settings

if TYPE_CHECKING:
    from ..policy.store import PolicyStore
    from ..reads import StatsReader


@dataclass
class CliContext:
    """Created by the top-level group; commands call `policy()` / `stats()` when they need them."""

    settings: Settings
    _policy: PolicyStore | None = field(default=None, init=False)
    _stats: StatsReader | None = field(default=None, init=False)

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

    def close(self) -> None:
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
