"""Process-wide singletons configured from the environment (§6), created on first call."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .policy.store import PolicyStore

_lock = threading.Lock()
_policy: PolicyStore | None = None


def global_policy() -> PolicyStore:
    """The process's `PolicyStore`, initialised from ``FEDTRACK_*`` on first call."""
    global _policy
    store = _policy
    if store is not None:
        return store
    with _lock:
        if _policy is None:
            from .policy.store import PolicyStore

            settings = Settings.from_env()
            _policy = PolicyStore(
                settings.database_url, settings.redis_url, namespace=settings.namespace
            ).init()
        return _policy


def reset_globals() -> None:
    """Close and forget the singletons (for tests and for re-configuration)."""
    global _policy
    with _lock:
        if _policy is not None:
            _policy.close()
        _policy = None
