"""Keep one process's `PolicyState` equal to the cluster's, through Redis pub/sub (G7).

`PolicyRedis` is the Redis side of the policy (the two scripts, snapshot reads, the
message format). `PolicySync` is a daemon thread per process: it applies each message in
version order (a burst of messages makes one new view), resyncs in full from Redis on a
version gap or a (re)subscription, and every `interval` seconds compares its version
with Redis's (one ``HGET``) and reloads when a message was missed. It never touches the
database: workers put no load on it. While Redis is down, or has lost the policy, the
state is left alone, so the hot path keeps serving the last known rules.

Rebuilding Redis from the database (after Redis lost the policy, or missed a change
committed while it was down) is the flusher leader's job (`reconcile_with_database`),
and that of a process changing the policy; both check the database's identity first, so a
process on another database never rebuilds the cluster's rules (G11).

On Redis Cluster the channel is a sharded one (``SSUBSCRIBE`` / ``SPUBLISH`` on the policy
tag), and a subscription whose node stopped answering is recreated from scratch.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import sqlalchemy as sa
from redis.backoff import ExponentialBackoff

from ..engine import RedisEngine
from ..errors import DatabaseMismatchError
from ..identity import IdentityGuard, read_database_id
from ..keys import NamespaceKeys
from ..metrics import PROPAGATION_SECONDS, THREAD_ERRORS
from ..scripts import Scripts
from . import db
from .codec import decode_change, decode_rule, encode_change, encode_rule, published_at
from .state import ACCEPT, Change, PolicyState, Snapshot

log = logging.getLogger("fedtrack_redis.policy")

#: Rules per HSET while a snapshot is written to its staging hash.
STAGING_BATCH = 1000
#: Seconds a staging hash lives if its writer dies before the swap.
STAGING_TTL = 600
#: Sliced reads of a large snapshot before falling back to one atomic read.
SNAPSHOT_ATTEMPTS = 3
#: Rules one change may carry (one script call): larger changes are a full resync.
MAX_CHANGE_RULES = 1000
#: Messages applied together at most (one new view for the whole burst).
BURST = 1000


class PolicyRedis:
    """The policy's keys, scripts and channel in Redis for one namespace."""

    def __init__(self, engine: RedisEngine, keys: NamespaceKeys) -> None:
        self.engine = engine
        self.keys = keys
        self._scripts = Scripts(engine)

    @property
    def client(self) -> redis.Redis:
        """The client of the node holding the policy tag."""
        return self.engine.node_for(self.keys.policy_meta)

    def apply(self, change: Change, identity: str) -> int:
        """1 applied, 0 already there, -1 Redis is missing an earlier change, -2 Redis
        holds the policy of another database."""
        value = ""
        if change.op == "policy":
            value = change.policy
        elif change.op == "enabled":
            value = "1" if change.enabled else "0"
        args: list[str | int] = [change.version, change.op, value, self.keys.policy_channel]
        args += [encode_change(change), self.engine.publish_command, identity]
        for rule in change.rules:
            args += [rule.text, encode_rule(rule)]
        args += change.texts
        keys = [self.keys.rules, self.keys.policy_meta]
        return int(self._scripts.run("policy_apply", keys, args))

    def replace(self, snapshot: Snapshot, identity: str) -> int:
        """Install a database snapshot unless Redis holds this version or newer: 1
        replaced, 0 not newer, -2 Redis holds the policy of another database.

        The rules go into a staging hash in batches, then one short call swaps them in,
        so no call grows with the number of rules.
        """
        staging = self.keys.rules_staging(secrets.token_hex(8))
        client = self.client
        rules = list(snapshot.rules.values())
        try:
            for start in range(0, len(rules), STAGING_BATCH):
                mapping = {
                    rule.text: encode_rule(rule) for rule in rules[start : start + STAGING_BATCH]
                }
                client.hset(staging, mapping=mapping)  # type: ignore[arg-type]
                if start == 0:
                    client.expire(staging, STAGING_TTL)
            message = encode_change(Change(snapshot.version, "resync"))
            args: list[str | int] = [
                snapshot.version,
                snapshot.policy,
                "1" if snapshot.enabled else "0",
                self.keys.policy_channel,
                message,
                self.engine.publish_command,
                identity,
            ]
            keys = [self.keys.rules, self.keys.policy_meta, staging]
            return int(self._scripts.run("policy_replace", keys, args))
        except BaseException:
            client.unlink(staging)
            raise

    def version(self) -> int | None:
        """Version Redis holds, or None when it has no policy state at all."""
        value = self.client.hget(self.keys.policy_meta, "version")
        return int(value) if value is not None else None

    def identity(self) -> str | None:
        """The database identity the policy in Redis came from, or None."""
        value = self.client.hget(self.keys.policy_meta, "database_id")
        return str(value) if value is not None else None

    def read_snapshot(self) -> tuple[Snapshot, str | None] | None:
        """The policy as Redis holds it, at one version, with its database identity, or
        None when Redis has none.

        A small policy is one atomic read. A large one is read in `STAGING_BATCH` slices
        (HSCAN), so no single call holds Redis up for the whole hash, between two reads
        of the version: every change bumps the version in the same script that changes
        the rules, so an unchanged version means the slices form one snapshot. A version
        that moved meanwhile means read again (a few times; then one atomic read).
        """
        for _attempt in range(SNAPSHOT_ATTEMPTS):
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.keys.policy_meta)
                pipe.hlen(self.keys.rules)
                meta, size = pipe.execute()
            if "version" not in meta:
                return None
            if size <= STAGING_BATCH:
                break
            values = dict(self.client.hscan_iter(self.keys.rules, count=STAGING_BATCH))
            if self.client.hget(self.keys.policy_meta, "version") == meta["version"]:
                return self._snapshot(meta, values), meta.get("database_id")
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.policy_meta)
            pipe.hgetall(self.keys.rules)
            meta, values = pipe.execute()
        if "version" not in meta:
            return None
        return self._snapshot(meta, values), meta.get("database_id")

    @staticmethod
    def _snapshot(meta: dict[str, str], values: dict[str, str]) -> Snapshot:
        return Snapshot(
            version=int(meta["version"]),
            policy=meta.get("policy", ACCEPT),
            enabled=meta.get("enabled", "1") == "1",
            rules={text: decode_rule(text, value) for text, value in values.items()},
        )


def rebuild_redis(
    database: sa.Engine, side: PolicyRedis, guard: IdentityGuard, snapshot: Snapshot | None = None
) -> Snapshot:
    """Copy the database's policy (`snapshot` when just read) into Redis (only if newer
    there) and return it.

    Raises `DatabaseMismatchError` (Redis untouched) when the database is not the one the
    namespace's policy came from.
    """
    with database.connect() as connection:
        identity = read_database_id(connection)
    guard.check(identity, [side.identity()])
    if snapshot is None:
        snapshot = db.load_snapshot(database)
    if side.replace(snapshot, identity) == -2:
        guard.check(identity, [side.identity()])  # raises: someone else's policy got in
    return snapshot


def reconcile_with_database(
    database: sa.Engine, side: PolicyRedis, guard: IdentityGuard, lagging: list[int | None]
) -> bool:
    """The flusher leader's check: rebuild Redis's policy when it is missing, or behind
    the database on two looks in a row (a change in flight is behind for a moment).
    `lagging` carries the Redis version seen behind at the previous look. True if rebuilt.
    """
    redis_version = side.version()
    db_version = db.read_version(database)
    if redis_version is not None and redis_version >= db_version:
        lagging[0] = None
        return False
    if redis_version is None or lagging[0] == redis_version:
        if redis_version is None:
            log.info("policy: Redis holds no policy; writing it from the database")
        else:
            log.warning("policy: Redis is behind the database; rebuilding it")
        rebuild_redis(database, side, guard)
        lagging[0] = None
        return True
    lagging[0] = redis_version
    return False


class _Subscription:
    """The policy channel as one object: classic pub/sub, or sharded on Redis Cluster."""

    def __init__(self, engine: RedisEngine, channel: str) -> None:
        self._engine = engine
        self._channel = channel
        self._sharded = engine.kind == "cluster"
        self._pubsub: Any = None

    def get(self, timeout: float) -> dict[str, Any] | None:
        if self._pubsub is None:
            self._pubsub = self._engine.client.pubsub()
            if self._sharded:
                self._pubsub.ssubscribe(self._channel)
            else:
                self._pubsub.subscribe(self._channel)
        return self._engine.next_message(self._pubsub, timeout, sharded=self._sharded)

    def reset(self) -> None:
        """Drop the subscription; the next `get` makes a new one (on the current node)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
        self._engine.refresh()

    close = reset


class PolicySync:
    """Daemon thread applying channel messages and checking Redis every `interval` s."""

    def __init__(
        self,
        state: PolicyState,
        side: PolicyRedis,
        guard: IdentityGuard,
        *,
        interval: float = 1.0,
        listeners: list[Callable[[Change], None]] | None = None,
    ) -> None:
        self._state = state
        self._side = side
        self._guard = guard
        self._interval = interval
        self._listeners = listeners if listeners is not None else []
        self._stop = threading.Event()
        self._behind_version: int | None = None  # Redis's version when we last lagged it
        self._warned_missing = False
        self._subscription = _Subscription(side.engine, side.keys.policy_channel)
        self._thread = threading.Thread(
            target=self.listen, name="fedtrack-policy-sync", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # -- called from the thread -------------------------------------------------

    def listen(self) -> None:
        backoff = ExponentialBackoff(cap=2.0, base=0.05)
        failures = 0
        next_check = 0.0
        subscription = self._subscription
        try:
            while not self._stop.is_set():
                try:
                    timeout = max(0.0, min(0.5, next_check - time.monotonic()))
                    message = subscription.get(timeout)
                    if message is not None:
                        self.handle_burst(message, subscription)
                    if time.monotonic() >= next_check:
                        self.check_version()
                        next_check = time.monotonic() + self._interval
                    failures = 0
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    failures += 1
                    log.warning("policy sync: Redis unavailable (%s); serving cached rules", exc)
                    subscription.reset()
                    self._stop.wait(backoff.compute(failures))
                except Exception:
                    failures += 1
                    THREAD_ERRORS.labels("policy_sync").inc()
                    log.exception("policy sync: unexpected error; retrying")
                    subscription.reset()
                    self._stop.wait(backoff.compute(failures))
        finally:
            subscription.close()

    def handle_burst(self, first: dict[str, Any], subscription: _Subscription) -> None:
        """Handle `first` and every message already waiting, as one batch of changes."""
        changes: list[tuple[Change, float | None]] = []
        message: dict[str, Any] | None = first
        while message is not None and len(changes) < BURST:
            self._collect(message, changes)
            message = subscription.get(0.0)
        if changes:
            self._apply(changes)

    def handle(self, message: dict[str, Any]) -> None:
        """Handle one channel message (for tests; the thread uses `handle_burst`)."""
        changes: list[tuple[Change, float | None]] = []
        self._collect(message, changes)
        if changes:
            self._apply(changes)

    def _collect(self, message: dict[str, Any], changes: list[tuple[Change, float | None]]) -> None:
        kind = message.get("type")
        if kind in ("subscribe", "ssubscribe"):
            self.resync_from_redis()  # (re)subscribed: we may have missed messages
        elif kind in ("message", "smessage"):
            data = str(message.get("data", ""))
            change = decode_change(data)
            if change is None:
                log.warning("policy sync: ignored a malformed message")
            else:
                changes.append((change, published_at(data)))

    def _apply(self, changes: list[tuple[Change, float | None]]) -> None:
        outcomes = self._state.apply_many([change for change, _ in changes])
        now = time.time()
        for (change, published), outcome in zip(changes, outcomes, strict=True):
            if outcome == "applied":
                if published is not None:
                    PROPAGATION_SECONDS.observe(max(0.0, now - published))
                self._notify(change)
        if "gap" in outcomes:
            self.resync_from_redis()

    def resync_from_redis(self) -> None:
        found = self._side.read_snapshot()
        if found is None:  # Redis lost the policy: the flusher leader rebuilds it
            if not self._warned_missing:
                log.warning(
                    "policy sync: Redis holds no policy; serving cached rules until"
                    " the flusher leader rebuilds it from the database"
                )
                self._warned_missing = True
            return
        self._warned_missing = False
        snapshot, identity = found
        expected = self._guard.expected
        if identity is not None and expected is not None and identity != expected:
            log.error(
                "policy sync: %s",
                DatabaseMismatchError(
                    f"Redis holds the policy of database {identity}, this process expects"
                    f" {expected}; keeping the rules it has",
                    expected=expected,
                    actual=identity,
                ),
            )
            return
        self._guard.observe([identity])
        if self._state.replace(snapshot):
            log.info("policy sync: resynced at version %d", snapshot.version)
            self._notify(Change(snapshot.version, "resync"))

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("policy sync: a change listener failed")

    def check_version(self) -> None:
        """Reload when this process stays behind Redis (a message missed)."""
        redis_version = self._side.version()
        if redis_version is None:
            self._behind_version = None
            return
        if redis_version > self._state.version:
            # A message published but not yet read looks like this for a moment (often,
            # on a busy process): resync only when the next look finds this process
            # still short of that version, i.e. the message was missed.
            if self._behind_version is not None and self._state.version < self._behind_version:
                self._behind_version = None
                self.resync_from_redis()
            else:
                self._behind_version = redis_version
        else:
            self._behind_version = None
