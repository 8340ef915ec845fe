"""Health webhooks from the flusher leader, against a local HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from fedtrack_redis import FederationTracker, Webhook
from fedtrack_redis.errors import ConfigurationError
from fedtrack_redis.health import HealthPolicy
from fedtrack_redis.health.webhooks import retry_delay, signature
from fedtrack_redis.store.schema import federation_health_events
from servers import wait_for
from tracker_helpers import make_tracker

__all__ = ["make_tracker"]

SECRET = "s3cret"
FAST = HealthPolicy(
    failures=2, backoff_min=30.0, backoff_max=60.0, unavailable_after=7, period=3600.0
)
Make = Callable[..., FederationTracker]


class Receiver:
    """A local webhook receiver: `mode` is "ok", "fail" (HTTP 503) or "slow" (3 s, then ok)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                if receiver.mode == "slow":
                    time.sleep(3)
                receiver.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def go_down_and_back(tracker: FederationTracker, domain: str) -> None:
    for _ in range(2):
        tracker.record_failure(domain, "HTTPS")
    tracker.push()
    tracker.record_success(domain, 10, "HTTPS")
    tracker.push()


def test_webhook_body_signature_and_id(
    make_tracker: Make, receiver: Receiver, sqlite_url: str
) -> None:
    tracker = make_tracker(health=FAST)
    flusher = tracker.start_flusher(
        sqlite_url, interval=60, webhooks=[Webhook(receiver.url, SECRET)]
    )
    wait_for(lambda: flusher.is_leader, 15, "the flusher leads")
    go_down_and_back(tracker, "hook.example")
    wait_for(lambda: len(receiver.received) >= 2, 10, "both transitions delivered")
    headers, body = receiver.received[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Fedtrack-Signature"] == expected == signature(SECRET, body)
    events = receiver.events()
    assert [(e["from"], e["to"]) for e in events] == [
        ("healthy", "backoff"),
        ("backoff", "healthy"),
    ]
    first = events[0]
    assert set(first) == {"id", "domain", "from", "to", "at", "stats"}
    assert first["domain"] == "hook.example" and abs(first["at"] - time.time()) < 30
    assert first["stats"]["failed_https"] == 2 and first["stats"]["consecutive_failures"] == 2
    assert first["stats"]["next_attempt_at"] is not None
    assert events[1]["stats"]["success_https"] == 1
    assert len({e["id"] for e in events}) == 2
    assert headers["X-Fedtrack-Event"] == first["id"]
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(federation_health_events.c.id)).all()
    engine.dispose()
    assert {row[0] for row in rows} == {e["id"] for e in events}  # the history is kept


def test_a_receiver_down_for_a_while_gets_every_event_once_back(
    make_tracker: Make, receiver: Receiver, sqlite_url: str
) -> None:
    receiver.mode = "fail"
    tracker = make_tracker(health=FAST)
    flusher = tracker.start_flusher(
        sqlite_url, interval=60, webhooks=[Webhook(receiver.url, SECRET)]
    )
    wait_for(lambda: flusher.is_leader, 15, "the flusher leads")
    go_down_and_back(tracker, "a.example")
    go_down_and_back(tracker, "b.example")
    wait_for(lambda: receiver.attempts >= 8, 10, "deliveries refused twice each")
    receiver.mode = "ok"
    wait_for(lambda: len(receiver.received) >= 4, 15, "every event delivered once back")
    events = receiver.events()
    assert sorted((e["domain"], e["to"]) for e in events) == [
        ("a.example", "backoff"),
        ("a.example", "healthy"),
        ("b.example", "backoff"),
        ("b.example", "healthy"),
    ]


def test_a_slow_receiver_does_not_delay_flushes(
    make_tracker: Make, receiver: Receiver, sqlite_url: str
) -> None:
    receiver.mode = "slow"
    tracker = make_tracker(health=FAST)
    flusher = tracker.start_flusher(
        sqlite_url, interval=60, webhooks=[Webhook(receiver.url, SECRET)]
    )
    wait_for(lambda: flusher.is_leader, 15, "the flusher leads")
    go_down_and_back(tracker, "slow.example")
    wait_for(lambda: receiver.attempts >= 1, 10, "a delivery is in progress")
    tracker.record_success("other.example", 5, "SMTP")
    tracker.push()
    started = time.monotonic()
    assert flusher.flush_once() >= 1
    assert time.monotonic() - started < 1.5  # the receiver takes 3 s per delivery


def test_retry_schedule_and_bad_webhooks() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 9, 10, 30)] == [1, 2, 4, 256, 300, 300]
    with pytest.raises(ConfigurationError):
        Webhook("ftp://x", SECRET)
    with pytest.raises(ConfigurationError):
        Webhook("http://x", "")
    assert SECRET not in repr(Webhook("http://x", SECRET))
