"""Keep one process's `PolicyState` equal to the cluster's, through Redis pub/sub.

`PolicyRedis` is the Redis side of the policy (the two scripts, snapshot reads, the
message format). `PolicySync` is a daemon thread per process: it applies each message
in version order, resyncs in full on a version gap or a (re)subscription, and every
`interval` seconds reconciles the three copies: when Redis is behind the database (it
lost its data, or a change committed while it was down) it rebuilds Redis from the
database and announces a resync; when this process is behind Redis it reloads.
While Redis is down the state is left alone, so the hot path keeps serving the last
known rules.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis
import sqlalchemy as sa
from redis.backoff import ExponentialBackoff

from .. import scripts
from ..keys import NamespaceKeys
from ..metrics import PROPAGATION_SECONDS
from . import db
from .state import ACCEPT, Change, PolicyState, Snapshot

log = logging.getLogger("fedtrack_redis.policy")


def encode_change(change: Change) -> str:
    return json.dumps(
        {
            "v": change.version,
            "op": change.op,
            "d": change.domain,
            "t": change.created_at,
            "p": change.policy,
            "e": change.enabled,
            "ts": round(time.time(), 6),
        },
        separators=(",", ":"),
    )


def decode_change(text: str) -> Change | None:
    """The change in a channel message, or None for anything malformed."""
    try:
        data = json.loads(text)
        return Change(
            version=int(data["v"]),
            op=str(data["op"]),
            domain=str(data.get("d", "")),
            created_at=int(data.get("t", 0)),
            policy=str(data.get("p", "")),
            enabled=bool(data.get("e", True)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _published_at(text: str) -> float | None:
    try:
        value = json.loads(text).get("ts")
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


class PolicyRedis:
    """The policy's keys, scripts and channel in Redis for one namespace."""

    def __init__(self, client: redis.Redis, keys: NamespaceKeys) -> None:
        self.client = client
        self.keys = keys
        self._apply = scripts.register(client, "policy_apply")
        self._replace = scripts.register(client, "policy_replace")

    def apply(self, change: Change) -> int:
        """1 applied, 0 already there, -1 Redis is missing an earlier change."""
        value = change.domain
        if change.op == "policy":
            value = change.policy
        elif change.op == "enabled":
            value = "1" if change.enabled else "0"
        args: list[str | int] = [change.version, change.op, value, change.created_at or ""]
        args += [self.keys.policy_channel, encode_change(change)]
        return int(self._apply(keys=[self.keys.rules, self.keys.policy_meta], args=args))

    def replace(self, snapshot: Snapshot) -> int:
        """Install a database snapshot unless Redis holds this version or newer."""
        message = encode_change(Change(snapshot.version, "resync"))
        args: list[str | int] = [
            snapshot.version,
            snapshot.policy,
            "1" if snapshot.enabled else "0",
            self.keys.policy_channel,
            message,
        ]
        for domain, created in snapshot.rules.items():
            args += [domain, created]
        return int(self._replace(keys=[self.keys.rules, self.keys.policy_meta], args=args))

    def version(self) -> int | None:
        """Version Redis holds, or None when it has no policy state at all."""
        value = self.client.hget(self.keys.policy_meta, "version")
        return int(value) if value is not None else None

    def read_snapshot(self) -> Snapshot | None:
        """The policy as Redis holds it (one atomic read), or None when Redis has none."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.policy_meta)
            pipe.hgetall(self.keys.rules)
            meta, rules = pipe.execute()
        if "version" not in meta:
            return None
        return Snapshot(
            version=int(meta["version"]),
            policy=meta.get("policy", ACCEPT),
            enabled=meta.get("enabled", "1") == "1",
            rules={domain: int(created) for domain, created in rules.items()},
        )


def rebuild_redis(engine: sa.Engine, side: PolicyRedis) -> Snapshot:
    """Copy the database's policy into Redis (only if newer there) and return it."""
    snapshot = db.load_snapshot(engine)
    side.replace(snapshot)
    return snapshot


class PolicySync:
    """Daemon thread applying channel messages and reconciling every `interval` seconds."""

    def __init__(
        self,
        state: PolicyState,
        side: PolicyRedis,
        engine: sa.Engine,
        *,
        interval: float = 1.0,
        listeners: list[Callable[[Change], None]] | None = None,
    ) -> None:
        self._state = state
        self._side = side
        self._engine = engine
        self._interval = interval
        self._listeners = listeners if listeners is not None else []
        self._stop = threading.Event()
        self._lagging_redis_version: int | None = None
        self._behind_version: int | None = None  # Redis's version when we last lagged it
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
        pubsub = self._side.client.pubsub()  # type: ignore[no-untyped-call]
        next_reconcile = 0.0
        try:
            while not self._stop.is_set():
                try:
                    if not pubsub.subscribed:
                        pubsub.subscribe(self._side.keys.policy_channel)
                    timeout = max(0.0, min(0.5, next_reconcile - time.monotonic()))
                    message = pubsub.get_message(timeout=timeout)
                    if message is not None:
                        self.handle(message)
                    if time.monotonic() >= next_reconcile:
                        self.reconcile()
                        next_reconcile = time.monotonic() + self._interval
                    failures = 0
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    failures += 1
                    log.warning("policy sync: Redis unavailable (%s); serving cached rules", exc)
                    pubsub.reset()
                    self._stop.wait(backoff.compute(failures))
                except Exception:
                    log.exception("policy sync: unexpected error; retrying")
                    self._stop.wait(1.0)
        finally:
            pubsub.close()

    def handle(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self.resync_from_redis()  # (re)subscribed: we may have missed messages
            return
        if kind != "message":
            return
        change = decode_change(str(message.get("data", "")))
        if change is None:
            log.warning("policy sync: ignored a malformed message")
            return
        outcome = self._state.apply(change)
        published = _published_at(str(message.get("data", "")))
        if published is not None and outcome == "applied":
            PROPAGATION_SECONDS.observe(max(0.0, time.time() - published))
        if outcome == "gap":
            self.resync_from_redis()
        elif outcome == "applied":
            self._notify(change)

    def resync_from_redis(self) -> None:
        snapshot = self._side.read_snapshot()
        if snapshot is None:  # Redis lost the policy: rebuild it from the database
            snapshot = rebuild_redis(self._engine, self._side)
        if self._state.replace(snapshot):
            log.info("policy sync: resynced at version %d", snapshot.version)
            self._notify(Change(snapshot.version, "resync"))

    def _notify(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("policy sync: a change listener failed")

    def reconcile(self) -> None:
        redis_version = self._side.version()
        try:
            db_version: int | None = db.read_version(self._engine)
        except sa.exc.DBAPIError as exc:
            log.debug("policy sync: database unavailable (%s)", exc)
            db_version = None
        if db_version is not None and (redis_version is None or redis_version < db_version):
            # A change in flight looks like this for a moment: rebuild only if it lasts.
            if redis_version is None or self._lagging_redis_version == redis_version:
                log.warning("policy sync: Redis behind the database; rebuilding it")
                snapshot = rebuild_redis(self._engine, self._side)
                if self._state.replace(snapshot):
                    self._notify(Change(snapshot.version, "resync"))
                self._lagging_redis_version = None
            else:
                self._lagging_redis_version = redis_version
            return
        self._lagging_redis_version = None
        if redis_version is not None and redis_version > self._state.version:
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
