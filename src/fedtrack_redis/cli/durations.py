"""Times on the command line: ``--for 7d`` (how long a rule lasts) and ``--since``."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from .errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:(\d+)([smhdw]))", re.IGNORECASE)
_DURATIONS = re.compile(r"(?:\d+[smhdw])+")
#: The longest ``--for`` accepted (a typo such as ``7000d`` is refused, not obeyed).
MAX_SECONDS = 10 * 365 * 86400


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or a sum such as ``1d12h``."""
    value = text.strip().lower()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise BadInput(f"invalid duration {text!r}: use e.g. 30m, 12h, 7d, 2w or 1d12h")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if not 0 < seconds <= MAX_SECONDS:
        raise BadInput(f"invalid duration {text!r}: from 1s to 10 years")
    return seconds


def expiry_after(text: str | None) -> int | None:
    """Unix seconds at the end of a ``--for`` duration from now (None without one)."""
    return None if text is None else int(time.time()) + parse_duration(text)


def parse_since(text: str) -> int:
    """Unix seconds of a ``--since``: a duration ago (``1d``), a date or date and time
    (``2026-12-01``, ``2026-12-01T10:00``, UTC unless it names a zone), or unix seconds."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    if _DURATIONS.fullmatch(value.lower()):
        return int(time.time()) - parse_duration(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"invalid --since {text!r}: use a duration (1d), a date (2026-12-01) or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
