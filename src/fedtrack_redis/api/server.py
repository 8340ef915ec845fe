"""Run the admin API with uvicorn."""

from __future__ import annotations

import uvicorn

from ..config import Settings
from ..policy.store import PolicyStore
from ..reads import StatsReader
from .app import create_app
from .tokens import parse_tokens


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8025) -> None:
    """Serve until interrupted. Binds 127.0.0.1 unless told otherwise.

    The tokens are checked and the policy store opened before uvicorn starts, so a bad
    token or an unreachable database is the CLI's one line and exit code, not a
    traceback from the server's start-up.
    """
    parse_tokens(settings.admin_token, settings.admin_tokens)
    policy = PolicyStore(
        settings.require_database(),
        settings.redis_url,
        namespace=settings.namespace,
        database_id=settings.database_id,
        database_pool=True,  # an admin process: changes skip a new connection
    )
    stats = StatsReader(
        settings.redis_url, namespace=settings.namespace, database=settings.database_url
    )
    try:
        policy.init()
        app = create_app(settings, policy=policy, stats=stats)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        policy.close()
        stats.close()
