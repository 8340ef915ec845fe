"""A small SMTP relay frontend that obeys the cluster's federation policy and reports stats.

    FEDTRACK_LOCAL_DOMAIN=mail.example python examples/smtp_relay.py --port 2525

Every sender domain (MAIL FROM) and recipient domain (RCPT TO) is checked with
`check_federation_policy`, in process memory, before the message is accepted; a refused
domain gets ``554 5.7.1``. An accepted message counts as an inbound delivery from the
sender's domain and, for each remote recipient, as a queued message that the relay then
"delivers" (here: hands to a callable, by default a no-op) over SMTP, recording the
success and its latency. A delivery is attempted only when `tracker.should_attempt`
allows it (a domain held back cluster-wide keeps its messages in `deferred` for a later
try); a callable that raises `PermanentFailureError` (an SMTP 5xx for one recipient) records a
permanent failure, which never holds the domain back. Requires ``pip install aiosmtpd``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from fedtrack_redis import (
    FederationTracker,
    InvalidDomainError,
    PolicyStore,
    check_federation_policy,
    normalize_domain,
)

Deliver = Callable[[str, Envelope], None]


class PermanentFailureError(Exception):
    """Raised by a delivery callable when the remote refused one recipient for good."""


def domain_of(address: str) -> str | None:
    """The domain part of an address, or None for the null sender ``<>``."""
    if not address:
        return None
    return address.rpartition("@")[2]


class FederationRelay:
    """aiosmtpd handler: policy check on MAIL and RCPT, stats on DATA."""

    def __init__(
        self,
        store: PolicyStore,
        tracker: FederationTracker,
        local_domain: str,
        deliver: Deliver | None = None,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.local_domain = local_domain
        self.deliver = deliver or (lambda recipient, envelope: None)
        #: (recipient, envelope) held back by delivery health, to try again later.
        self.deferred: list[tuple[str, Envelope]] = []

    def allowed(self, domain: str) -> bool:
        return check_federation_policy(domain, local_domain=self.local_domain, store=self.store)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = domain_of(address)
        if domain is not None and not self.allowed(domain):
            return f"554 5.7.1 Federation with {domain} is not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = domain_of(address)
        if domain is None:
            return "501 5.1.3 Recipient address required"
        if not self.allowed(domain):
            return f"554 5.7.1 Federation with {domain} is not allowed"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        started = time.monotonic()
        sender = domain_of(envelope.mail_from or "")
        if sender and self._is_remote(sender):
            self.tracker.record_success(sender, (time.monotonic() - started) * 1000)
        for recipient in envelope.rcpt_tos:
            domain = domain_of(recipient)
            if domain is None or not self._is_remote(domain):
                continue
            if not self.tracker.should_attempt(domain):
                self.deferred.append((recipient, envelope))  # held back cluster-wide
                continue
            self.tracker.increment_queue(domain)
            attempt = time.monotonic()
            try:
                self.deliver(recipient, envelope)
            except PermanentFailureError:
                self.tracker.record_failure(domain, "SMTP", permanent=True)
            except OSError:
                self.tracker.record_failure(domain, "SMTP")
            else:
                self.tracker.record_success(domain, (time.monotonic() - attempt) * 1000, "SMTP")
            finally:
                self.tracker.decrement_queue(domain)
        return "250 2.0.0 Message accepted for delivery"

    def _is_remote(self, domain: str) -> bool:
        try:
            return normalize_domain(domain) != self.local_domain
        except InvalidDomainError:
            return False


def start(
    store: PolicyStore,
    tracker: FederationTracker,
    local_domain: str,
    *,
    host: str = "127.0.0.1",
    port: int = 2525,
    **handler_options: Any,
) -> Controller:
    """Start the relay in a background thread; call ``.stop()`` on the result to end it."""
    relay = FederationRelay(store, tracker, local_domain, **handler_options)
    controller = Controller(relay, hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    from fedtrack_redis import global_policy, global_tracker
    from fedtrack_redis.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args()
    settings = Settings.from_env()
    controller = start(
        global_policy(), global_tracker(), settings.local_domain, host=args.host, port=args.port
    )
    print(f"SMTP relay on {args.host}:{args.port}; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
