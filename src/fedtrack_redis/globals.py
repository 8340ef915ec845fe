"""Process-wide singletons configured from the environment, created on first call."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .policy.store import PolicyStore
    from .tracker import FederationTracker

_lock = threading.Lock()
_policy: PolicyStore | None = None
_tracker: FederationTracker | None = None


def global_policy() -> PolicyStore:
    """The process's `PolicyStore`, initialised from ``FEDTRACK_*`` on first call.

    Needs ``FEDTRACK_DATABASE_URL`` (`ConfigurationError` naming it otherwise); the
    schema is checked, never changed (``fedtrack db upgrade`` changes it).
    """
    global _policy
    store = _policy
    if store is not None:
        return store
    with _lock:
        if _policy is None:
            from .policy.store import PolicyStore

            settings = Settings.from_env()
            _policy = PolicyStore(
                settings.require_database(),
                settings.redis_url,
                namespace=settings.namespace,
                database_id=settings.database_id,
            ).init()
        return _policy


def global_tracker() -> FederationTracker:
    """The process's pushing `FederationTracker`, configured from ``FEDTRACK_*`` on first call.

    It needs no database (the flusher leader hydrates what Redis lost);
    ``FEDTRACK_DATABASE_ID``, when set, pins the identity its pushes expect.
    """
    global _tracker
    tracker = _tracker
    if tracker is not None:
        return tracker
    with _lock:
        if _tracker is None:
            from .tracker import FederationTracker

            settings = Settings.from_env()
            _tracker = FederationTracker(
                settings.redis_url,
                namespace=settings.namespace,
                push_interval=settings.push_interval,
                database_id=settings.database_id,
                health=settings.health,
            )
        return _tracker


def reset_globals() -> None:
    """Close and forget the singletons (for tests and for re-configuration)."""
    global _policy, _tracker
    with _lock:
        policy, tracker = _policy, _tracker
        _policy = None
        _tracker = None
    try:
        if tracker is not None:
            tracker.close()
    finally:
        if policy is not None:
            policy.close()
