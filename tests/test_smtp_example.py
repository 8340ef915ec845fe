"""The SMTP relay example, driven by a real SMTP client (smtplib)."""

from __future__ import annotations

import importlib.util
import smtplib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fedtrack_redis import FederationTracker, PolicyStore
from servers import free_port, wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smtp_relay.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smtp_relay_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def relay(
    migrated_postgres_url: str, redis_url: str, namespace: str
) -> Iterator[tuple[int, PolicyStore, FederationTracker]]:
    example = load_example()
    store = PolicyStore(migrated_postgres_url, redis_url, namespace=namespace).init()
    tracker = FederationTracker(redis_url, namespace=namespace, push_interval=0.1)
    tracker.hydrate(migrated_postgres_url)  # as the flusher leader would
    port = free_port()
    controller = example.start(store, tracker, "mail.example", port=port)
    try:
        yield port, store, tracker
    finally:
        controller.stop()
        tracker.close()
        store.close()


MESSAGE = "Subject: hello\r\n\r\nfederated hello\r\n"


def test_blocked_sender_is_refused_with_554(
    relay: tuple[int, PolicyStore, FederationTracker],
) -> None:
    port, store, _ = relay
    store.add_rule("spam.example")
    with (
        smtplib.SMTP("127.0.0.1", port) as client,
        pytest.raises(smtplib.SMTPSenderRefused) as refused,
    ):
        client.sendmail("bot@SPAM.example", ["alice@mail.example"], MESSAGE)
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error.startswith(b"5.7.1")


def test_blocked_recipient_is_refused_and_allowed_one_delivered(
    relay: tuple[int, PolicyStore, FederationTracker],
) -> None:
    port, store, tracker = relay
    store.add_rule("[10.9.8.7]")
    with smtplib.SMTP("127.0.0.1", port) as client:
        refused = client.sendmail(
            "alice@mail.example", ["bob@[10.9.8.7]", "carol@friend.example"], MESSAGE
        )
    assert refused["bob@[10.9.8.7]"][0] == 554
    assert "carol@friend.example" not in refused
    tracker.push()
    stat = wait_for(lambda: tracker.get("friend.example"), 5, "stats of the delivered message")
    assert stat.success_smtp == 1
    assert stat.queued_messages == 0
    assert tracker.get("10.9.8.7") is None


def test_reject_policy_allows_only_listed_senders_and_counts_inbound(
    relay: tuple[int, PolicyStore, FederationTracker],
) -> None:
    port, store, tracker = relay
    store.set_policy("REJECT")
    store.add_rule("partner.example")
    with smtplib.SMTP("127.0.0.1", port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("x@stranger.example", ["alice@mail.example"], MESSAGE)
        client.rset()
        assert client.sendmail("y@partner.example", ["alice@mail.example"], MESSAGE) == {}
    tracker.push()
    stat = wait_for(lambda: tracker.get("partner.example"), 5, "inbound stats")
    assert stat.inbound_deliveries == 1
    assert stat.successful_deliveries == 1
