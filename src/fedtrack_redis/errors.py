"""One exception root for everything fedtrack-redis raises on purpose.

Callers catch `FedtrackError` to handle any failure of the library; the subclasses
name the kind of failure so the CLI and the HTTP API can map them to exit codes and
status codes without parsing messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedtrackError(Exception):
    """Root of every error raised by fedtrack-redis."""


class ConfigurationError(FedtrackError, ValueError):
    """A setting (environment variable, URL, option) has a value we cannot use."""


class InvalidDomainError(FedtrackError, ValueError):
    """A domain name or address literal that no host could have."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        super().__init__(f"invalid domain {shown}: {reason}")


class InvalidRuleError(InvalidDomainError):
    """A rule text that names no rule: a bad domain inside it, a network with host bits
    set, a malformed glob, a dot before an address literal, or too long.

    A subclass of `InvalidDomainError` so every call that takes a rule can be guarded by
    one ``except InvalidDomainError``, as calls that took a plain domain always were.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(value, reason)
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        self.args = (f"invalid rule {shown}: {reason}",)


class InvalidImportError(FedtrackError, ValueError):
    """A rule list with invalid entries: nothing was imported.

    `invalid` holds every entry (each names its ``line N`` and why); the message is one
    line naming the first few.
    """

    SHOWN = 3

    def __init__(self, target: str, invalid: Sequence[object]) -> None:
        self.target = target
        self.invalid = list(invalid)
        shown = "; ".join(" ".join(str(entry).split()) for entry in self.invalid[: self.SHOWN])
        more = len(self.invalid) - self.SHOWN
        rest = f"; and {more} more" if more > 0 else ""
        count = len(self.invalid)
        super().__init__(
            f"{target}: {count} invalid entr{'y' if count == 1 else 'ies'}, nothing imported"
            f" (--skip-invalid imports the rest): {shown}{rest}"
        )


class InvalidTransportError(FedtrackError, ValueError):
    """A transport name other than HTTP, HTTPS or SMTP."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(f"invalid transport {value!r}: expected HTTP, HTTPS or SMTP")


class InvalidPolicyError(FedtrackError, ValueError):
    """A federation policy other than ACCEPT or REJECT."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(f"invalid policy {value!r}: expected ACCEPT or REJECT")


class InvalidValueError(FedtrackError, ValueError):
    """A numeric argument out of its range (an ``enqueued_at`` that is no unix time, a
    ``top`` below 1); the message says which and what was given."""


class NotInitializedError(FedtrackError):
    """A store was used before `init()` (or after `close()`)."""


class BackendUnavailableError(FedtrackError):
    """Redis or the database could not be reached in time."""


class PropagationPendingError(BackendUnavailableError):
    """A policy change is committed to the database but Redis could not be updated.

    The change is durable and already applied in this process; every other process
    applies it once Redis answers again (each process reconciles Redis with the
    database every few seconds). Retrying the same call is safe: changes are idempotent.
    """


class UnreplicatedError(BackendUnavailableError):
    """Fewer replicas than ``wait_replicas`` confirmed a write (G10): it is not counted as
    done, and is retried."""


class FencedOutError(FedtrackError):
    """A flusher tried to write after a newer leader took over (fencing token too old)."""


class DatabaseMismatchError(FedtrackError):
    """This process's database is not the one the namespace's Redis data came from (G11).

    Raised instead of hydrating, flushing, taking the flusher lock or changing rules, so a
    process left on a default or staging database can never make PostgreSQL go backwards
    or rebuild the cluster's rules from the wrong place. The message names both
    identities and the (redacted) database URL.
    """

    def __init__(self, message: str, *, expected: str | None, actual: str | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class SchemaMismatchError(ConfigurationError):
    """The database's schema revision is not the one this version of the library uses."""


class InvalidWindowError(FedtrackError, ValueError):
    """A history window other than ``1h``, ``24h`` or ``7d``."""
