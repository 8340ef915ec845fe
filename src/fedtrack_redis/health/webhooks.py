"""Health webhooks, sent by the elected flusher leader (docs/health.md).

`HealthDispatcher` is a daemon thread of its own beside the flush thread, so a receiver
that is slow, times out or answers 5xx never delays a flush. While its flusher leads, each
round it copies new health events into the database (`events.copy_events`) and sends the
deliveries that are due: ``POST`` of the event's JSON, signed with
``X-Fedtrack-Signature: sha256=<hex HMAC-SHA256 of the body>``, with the event's ``id``
(a receiver drops repeats by it: delivery is at least once). A failed delivery is tried
again 1 s later, then after doubling waits capped at 5 minutes, for up to 24 hours.
Deliveries live in the database, so a new leader carries on where the old one stopped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from ..engine import RedisEngine
from ..errors import BackendUnavailableError, ConfigurationError
from ..keys import NamespaceKeys
from ..metrics import THREAD_ERRORS
from ..store.schema import federation_health_events, federation_webhook_deliveries
from .events import body_of, copy_events

log = logging.getLogger("fedtrack_redis.health")

FIRST_RETRY = 1.0
MAX_RETRY = 300.0
GIVE_UP_AFTER = 86_400.0
#: Seconds a receiver gets to answer one delivery.
TIMEOUT = 5.0
#: Seconds between two rounds of the dispatcher.
ROUND = 0.25
#: Deliveries sent per round at most.
BATCH = 100

_deliveries = federation_webhook_deliveries.c
_events = federation_health_events.c


@dataclass(frozen=True)
class Webhook:
    """A receiver of health events: `url` (http or https) and the HMAC `secret`."""

    url: str
    secret: str

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"webhook url must start with http:// or https://: {self.url!r}"
            )
        if not isinstance(self.secret, str) or not self.secret:
            raise ConfigurationError("webhook secret must be a non-empty string")

    def __repr__(self) -> str:
        return f"Webhook(url={self.url!r}, secret='***')"


def signature(secret: str, body: bytes) -> str:
    """The ``X-Fedtrack-Signature`` header value of `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: 1, 2, 4, … capped at 300."""
    return float(min(MAX_RETRY, FIRST_RETRY * 2 ** max(0, attempts - 1)))


def send(webhook: Webhook, body: bytes, event_id: str) -> None:
    """POST one delivery; raises OSError (urllib's errors) unless the answer is 2xx."""
    request = urllib.request.Request(
        webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Fedtrack-Signature": signature(webhook.secret, body),
            "X-Fedtrack-Event": event_id,
            "User-Agent": "fedtrack-redis",
        },
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(webhook.url, response.status, "not 2xx", {}, None)  # type: ignore[arg-type]


class HealthDispatcher:
    """Copies health events and delivers webhooks while `is_leader()` holds."""

    def __init__(
        self,
        engine: RedisEngine,
        keys: NamespaceKeys,
        db: sa.Engine,
        webhooks: Sequence[Webhook],
        is_leader: Callable[[], bool],
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._db = db
        self._webhooks = {hook.url: hook for hook in webhooks}
        self._is_leader = is_leader
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedtrack-webhooks", daemon=True)

    def start(self) -> HealthDispatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=TIMEOUT + 5)

    def _run(self) -> None:
        while not self._stop.wait(ROUND):
            if not self._is_leader():
                continue
            try:
                self.round()
            except (redis.RedisError, sa.exc.DBAPIError, BackendUnavailableError) as exc:
                # Redis or the database away (a failover, a restart): the next round
                log.warning("health events: round failed (%s); next round", type(exc).__name__)
            except Exception:  # never let the thread die; count what nobody expected
                THREAD_ERRORS.labels("webhooks").inc()
                log.exception("health events: unexpected error; next round")

    def round(self, now: float | None = None) -> int:
        """Copy new events, then send what is due; the deliveries made."""
        copy_events(self._engine, self._keys, self._db, list(self._webhooks))
        return self.deliver_due(time.time() if now is None else now)

    def deliver_due(self, now: float) -> int:
        if not self._webhooks:
            return 0
        with self._db.connect() as connection:
            due = connection.execute(
                sa.select(
                    _deliveries.event_id,
                    _deliveries.url,
                    _deliveries.attempts,
                    _deliveries.created_at,
                    _events.payload,
                )
                .join(federation_health_events, _events.id == _deliveries.event_id)
                .where(
                    _deliveries.delivered_at.is_(None),
                    _deliveries.gave_up.is_(False),
                    _deliveries.next_at <= now,
                    _deliveries.url.in_(list(self._webhooks)),
                )
                .order_by(_deliveries.next_at, _deliveries.event_id)
                .limit(BATCH)
            ).all()
        delivered = 0
        for event_id, url, attempts, created_at, payload in due:
            if self._stop.is_set() or not self._is_leader():
                break
            delivered += self._deliver(event_id, url, attempts, created_at, payload)
        return delivered

    def _deliver(
        self, event_id: str, url: str, attempts: int, created_at: int, payload: Any
    ) -> int:
        body = body_of(payload)
        error: str | None = None
        try:
            send(self._webhooks[url], body, event_id)
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = time.time()
        values: dict[str, Any] = {"attempts": attempts + 1, "last_error": error}
        if error is None:
            values["delivered_at"] = int(now)
        elif now - created_at >= GIVE_UP_AFTER:
            values["gave_up"] = True
            log.error("webhook %s: gave up on event %s after 24 h (%s)", url, event_id, error)
        else:
            values["next_at"] = now + retry_delay(attempts + 1)
            log.info("webhook %s: event %s not delivered (%s); retrying", url, event_id, error)
        with self._db.begin() as connection:
            connection.execute(
                sa.update(federation_webhook_deliveries)
                .where(_deliveries.event_id == event_id, _deliveries.url == url)
                .values(**values)
            )
        return 1 if error is None else 0
