"""Rules that lift by themselves: in every process by its own clock, then in the database.

Two steps, so the hot path never reads a clock nor waits for anyone:

* `ExpiryClock`, a daemon thread per store, sleeps until the earliest expiry the view's
  matcher holds (waking on every new view, and at least once a second while a rule is
  due to expire, so a clock step cannot delay it) and swaps in the matcher without the
  rules expired by then. A rule stops matching in the process within a second of its
  expiry, even while Redis and the database are down. It stays listed (`rules()`).
* `expire_due_rules`, called by the elected flusher leader every tick, deletes the
  expired rules from the database with an audit entry each (actor ``system:expiry``,
  action ``expire``) and sends their removal on the channel as one ``expire`` message
  per batch (never a full resync). Its transaction bumps the version row before it
  touches a rule row, as every change does, so it cannot deadlock with `add_rule`.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis
import sqlalchemy as sa

from ..errors import DatabaseMismatchError
from ..identity import IdentityGuard, read_database_id
from . import audit, db
from .state import Change, PolicyState
from .sync import MAX_CHANGE_RULES, PolicyRedis, rebuild_redis

log = logging.getLogger("fedtrack_redis.policy")

#: Longest sleep while a rule is due to expire (bounds the effect of a clock step).
MAX_SLEEP = 1.0


class ExpiryClock:
    """Daemon thread that drops expired rules from a `PolicyState`'s matcher on time."""

    def __init__(self, state: PolicyState) -> None:
        self._state = state
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedtrack-rule-expiry", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def poke(self) -> None:
        """A new view was swapped in: look at its earliest expiry again."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self._state.view.matcher.next_expiry - time.time()
                if wait <= 0:
                    self._state.expire()
                    continue
            except Exception:
                log.exception("rule expiry: unexpected error; retrying")
                wait = MAX_SLEEP
            self._wake.wait(None if math.isinf(wait) else min(wait, MAX_SLEEP))


def expire_due_rules(
    database: sa.Engine, side: PolicyRedis, guard: IdentityGuard, now: int | None = None
) -> int:
    """The flusher leader's removal of expired rules; returns how many it removed.

    Raises `DatabaseMismatchError` (nothing removed) when the database is not the
    namespace's; any other failure is logged and retried at the next tick.
    """
    removed = 0
    try:
        while True:
            count = _expire_batch(database, side, guard, int(time.time()) if now is None else now)
            removed += count
            if count < MAX_CHANGE_RULES:
                return removed
    except DatabaseMismatchError:
        raise
    except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
        log.warning("rule expiry failed (%s); retried next tick", type(exc).__name__)
    return removed


def _expire_batch(database: sa.Engine, side: PolicyRedis, guard: IdentityGuard, now: int) -> int:
    with database.connect() as connection:
        if not db.any_expired(connection, now):  # the common case: an index probe, no lock
            return 0
    try:
        in_redis = [side.identity()]
    except redis.RedisError:
        in_redis = []
    with database.begin() as connection:
        identity = read_database_id(connection)
        guard.check(identity, in_redis)
        version = db.bump_version(connection)  # first, as every change: one lock order
        rules = db.take_expired(connection, now, MAX_CHANGE_RULES)
        if not rules:
            connection.rollback()
            return 0
        audit.record_many(
            connection,
            [
                {
                    "at": now,
                    "actor": audit.EXPIRY_ACTOR,
                    "action": audit.EXPIRE,
                    "target": rule.text,
                    "before": audit.rule_json(rule),
                }
                for rule in rules
            ],
        )
    log.info("rule expiry: removed %d expired rule(s) at version %d", len(rules), version)
    change = Change(version, "expire", texts=tuple(rule.text for rule in rules))
    outcome = side.apply(change, identity)
    if outcome == -1:
        rebuild_redis(database, side, guard)
    elif outcome == -2:
        guard.check(identity, [side.identity()])  # raises: another database's policy
    return len(rules)
