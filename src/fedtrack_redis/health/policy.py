"""The thresholds of delivery health (`HealthPolicy`) and one domain's state (`DomainHealth`).

The state machine itself runs in push.lua, atomically with the counters it reads; this
module only describes its settings and decodes the records it leaves in Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import ConfigurationError

State = Literal["healthy", "backoff", "unavailable"]
HEALTHY: State = "healthy"
BACKOFF: State = "backoff"
UNAVAILABLE: State = "unavailable"
STATES: tuple[State, ...] = (HEALTHY, BACKOFF, UNAVAILABLE)
#: The one-letter state codes of the Redis health records.
CODES: dict[str, State] = {"h": HEALTHY, "b": BACKOFF, "u": UNAVAILABLE}
#: How long the per-shard event stream keeps entries: webhooks retry for 24 h after the
#: flusher leader copied them to the database, so two days leave room for a leader gap.
EVENT_RETENTION_MS = 2 * 86_400_000


@dataclass(frozen=True)
class HealthPolicy:
    """When a domain is held back: `failures` consecutive temporary outbound failures
    start a backoff of `backoff_min` seconds, doubled per further failure up to
    `backoff_max`, jittered by a factor in [0.8, 1.4]; failures spanning
    `unavailable_after` distinct `period`s (seconds) with no outbound success make it
    unavailable (one probe per `backoff_max`). One policy per namespace (docs/health.md)."""

    failures: int = 3
    backoff_min: float = 60.0
    backoff_max: float = 21_600.0
    unavailable_after: int = 7
    period: float = 86_400.0

    def __post_init__(self) -> None:
        for name in ("failures", "unavailable_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
                raise ConfigurationError(f"HealthPolicy.{name}: expected an integer in [1, 10000]")
        for name in ("backoff_min", "backoff_max", "period"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.001 <= value <= 366 * 86_400
            ):
                raise ConfigurationError(
                    f"HealthPolicy.{name}: expected seconds in [0.001, 31622400], got {value!r}"
                )
        if self.backoff_max < self.backoff_min:
            raise ConfigurationError("HealthPolicy: backoff_max must be ≥ backoff_min")

    def script_spec(self, publish: str, channel: str) -> str:
        """push.lua's health settings after the seed (see its header for ARGV[8])."""
        return (
            f"{self.failures},{_ms(self.backoff_min)},{_ms(self.backoff_max)},"
            f"{self.unavailable_after},{_ms(self.period)};{publish};{channel};"
            f"{EVENT_RETENTION_MS}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HealthPolicy:
        """The policy stored in Redis; `ConfigurationError` when it is not one."""
        try:
            data = json.loads(text)
            return cls(**{key: data[key] for key in asdict(cls())})
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"stored health policy is unreadable: {exc}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HealthPolicy | None:
        """The policy the ``FEDTRACK_HEALTH_*`` / ``FEDTRACK_BACKOFF_*`` /
        ``FEDTRACK_UNAVAILABLE_DAYS`` variables give, or None when none is set (the
        namespace's stored policy applies then)."""
        names = (
            "FEDTRACK_HEALTH_FAILURES",
            "FEDTRACK_BACKOFF_MIN",
            "FEDTRACK_BACKOFF_MAX",
            "FEDTRACK_UNAVAILABLE_DAYS",
            "FEDTRACK_HEALTH_PERIOD",
        )
        raw = {name: env.get(name, "").strip() for name in names}
        if not any(raw.values()):
            return None
        default = cls()
        try:
            return cls(
                failures=_int(raw["FEDTRACK_HEALTH_FAILURES"], default.failures),
                backoff_min=_float(raw["FEDTRACK_BACKOFF_MIN"], default.backoff_min),
                backoff_max=_float(raw["FEDTRACK_BACKOFF_MAX"], default.backoff_max),
                unavailable_after=_int(raw["FEDTRACK_UNAVAILABLE_DAYS"], default.unavailable_after),
                period=_float(raw["FEDTRACK_HEALTH_PERIOD"], default.period),
            )
        except ConfigurationError as exc:
            bad = ", ".join(name for name, value in raw.items() if value)
            raise ConfigurationError(f"{bad}: {exc}") from None


@dataclass(frozen=True)
class DomainHealth:
    """One domain's health: `state`, the `consecutive_failures` (temporary, outbound) since
    the last outbound success or reset, when they started (`failing_since`, unix seconds,
    None when 0), the `next_attempt_at` (unix seconds, None while healthy) and the
    distinct `failure_periods` they span."""

    domain: str
    state: State
    consecutive_failures: int = 0
    failing_since: float | None = None
    next_attempt_at: float | None = None
    failure_periods: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def decode_record(domain: str, record: str | None) -> DomainHealth:
    """A `health` hash record (push.lua's format) as a `DomainHealth`; none is healthy."""
    if not record:
        return DomainHealth(domain, HEALTHY)
    parts = record.split(",")
    try:
        state = CODES[parts[0]]
        count, since, upcoming, periods = (int(float(part)) for part in parts[1:5])
    except (KeyError, ValueError, IndexError):
        return DomainHealth(domain, HEALTHY)
    return DomainHealth(
        domain,
        state,
        consecutive_failures=count,
        failing_since=since / 1000 if count else None,
        next_attempt_at=upcoming / 1000 if state != HEALTHY else None,
        failure_periods=periods,
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _int(raw: str, default: int) -> int:
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigurationError(f"expected a positive integer, got {raw!r}")
    return int(raw)


def _float(raw: str, default: float) -> float:
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"expected a number of seconds, got {raw!r}") from None
