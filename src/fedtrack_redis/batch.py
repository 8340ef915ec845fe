"""The hot path (G1): recording calls add to an in-process pending batch, nothing else.

Every recording call validates its input, then takes one lock for a few dict and list
operations: no I/O, no clock (but the one read of `increment_queue`'s enqueue time), no
exception because a server is down. The pusher thread
swaps the batch out under the same lock (`Recorder.swap`) and sends it to Redis.

Layout, chosen for speed and a small footprint (targets in benchmarks/RESULTS.md: ≤ 0.5 µs
per call, ≤ 300 B per domain touched). One ``list`` row per domain spelling touched in the interval:

    [failed_http, failed_https, failed_smtp, success_http, success_https, success_smtp,
     inbound, total_latency_ms, queued, row_id, bucket_1, count_1, bucket_2, count_2,
     outcomes, bucket_3, count_3]

* Rows are keyed by the caller's spelling, so a known spelling costs one dict lookup for
  both validation and the row; a spelling is validated (`DomainMemo`) when its row is
  created, and rows of one domain are merged by normalized name at swap time.
* ``queued`` is the worker's absolute in-flight count for the domain, or -1 when no queue
  call touched it; queue calls always use the row of the normalized name.
* The first three latency buckets of a row are counted inline (most domains see one to
  three buckets per interval); any other lands in one dict per batch keyed by
  ``row_id + bucket``, where ``row_id`` is the row's insertion index shifted left by 7
  bits (buckets are 0…100). A dict entry costs about 70 B, two list slots 16 B.
* ``last_active`` is set by Redis's clock when the row is pushed: a row is a touch.
* ``outcomes`` is what delivery health (docs/health.md) needs of the order of outbound
  results, in one slot (8 B): ``2 * tail + healed``, where ``healed`` is 1 once an
  outbound success was recorded in the interval and ``tail`` counts the temporary
  outbound failures recorded after the last one. That is all "consecutive in the order
  recorded" depends on: a success wipes whatever came before it. Permanent failures and
  inbound successes leave it alone.

In-flight counts (G8) persist across batches in ``inflight`` (normalized domain → count
> 0); each step clamps at 0, so a decrement at 0 then an increment gives 1. Beside each
count, ``ages`` keeps the messages' enqueue times (first in, first out; `ages.AgeQueue`):
the pusher turns them into qshape columns off the hot path (`ages.AgeTracker`), for the
domains whose row carries a count and those whose messages reach a column boundary.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from itertools import product
from typing import Any, NamedTuple

from .ages import AgeQueue
from .domain import DEFAULT_MEMO
from .errors import InvalidDomainError, InvalidTransportError, InvalidValueError
from .stats import MAX_BUCKET

FAILED_HTTP, FAILED_HTTPS, FAILED_SMTP = 0, 1, 2
SUCCESS_HTTP, SUCCESS_HTTPS, SUCCESS_SMTP = 3, 4, 5
INBOUND = 6
LATENCY = 7
QUEUED = 8
ROW_ID = 9
FIRST_BUCKET = 10
FIRST_COUNT = 11
SECOND_BUCKET = 12
SECOND_COUNT = 13
#: ``2 * (temporary outbound failures after the row's last outbound success) + (1 when
#: the row holds an outbound success)``; `outcome_text` decodes it.
HEALTH = 14
THIRD_BUCKET = 15
THIRD_COUNT = 16
#: The (bucket, count) slot pairs counted inline in a row, filled in this order.
INLINE_BUCKETS = (
    (FIRST_BUCKET, FIRST_COUNT),
    (SECOND_BUCKET, SECOND_COUNT),
    (THIRD_BUCKET, THIRD_COUNT),
)
ROW_ID_SHIFT = 7
NOT_QUEUED = -1

#: Longest latency accepted (about 31 years): keeps every Redis counter far from 2^63.
MAX_LATENCY_MS = 10**12

_log2 = math.log2
_now = time.time

Row = list[Any]  # see the layout above


def _case_variants(word: str) -> list[str]:
    """Every ASCII upper/lower-case spelling of `word` (``http`` → ``HTTP``, ``hTtP``, …)."""
    return ["".join(chars) for chars in product(*((c.lower(), c.upper()) for c in word))]


def _transport_table(slots: dict[str, int]) -> dict[str, int]:
    return {spelling: slot for name, slot in slots.items() for spelling in _case_variants(name)}


#: Transport name (any ASCII case) → row slot. A precomputed table keeps the hot path to
#: one dict access, and refuses look-alikes that ``str.upper`` would map to ASCII
#: (``"\u017fmtp".upper() == "SMTP"``).
FAILURE_SLOTS = _transport_table({"HTTP": FAILED_HTTP, "HTTPS": FAILED_HTTPS, "SMTP": FAILED_SMTP})
SUCCESS_SLOTS = _transport_table(
    {"HTTP": SUCCESS_HTTP, "HTTPS": SUCCESS_HTTPS, "SMTP": SUCCESS_SMTP}
)
SUCCESS_SLOTS[""] = INBOUND

#: Buckets of the integer latencies below 4096 ms, precomputed (same rule as stats.bucket_of).
_SMALL_LIMIT = 4096  # spelled as a literal in record_success
_SMALL_BUCKETS = tuple(0 if ms < 1 else int(_log2(ms) * 4) + 1 for ms in range(_SMALL_LIMIT))


def outcome_text(outcomes: int) -> str:
    """The push line's health field of a row's `HEALTH` slot: ``"<n>"`` failures, or
    ``"s<n>"`` an outbound success then n failures ("" when nothing happened)."""
    if not outcomes:
        return ""
    tail = outcomes >> 1
    return f"s{tail}" if outcomes & 1 else str(tail)


def merge_outcomes(older: int, newer: int) -> int:
    """Two intervals' `HEALTH` slots as one: a newer success wipes the older tail."""
    return newer if newer & 1 else older + newer


def latency_bucket(latency_ms: object) -> tuple[float, int]:
    """Validate a latency and return it (int or float) with its histogram bucket.

    Raises ValueError for anything but a finite number in [0, MAX_LATENCY_MS].
    """
    value: float
    if isinstance(latency_ms, int):
        value = int(latency_ms)  # bool → 0/1
    elif isinstance(latency_ms, str | bytes | bytearray):
        raise ValueError(f"latency_ms must be a number of milliseconds, got {latency_ms!r}")
    else:
        try:
            value = float(latency_ms)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"latency_ms must be a number of milliseconds, got {latency_ms!r}"
            ) from None
    if not 0 <= value <= MAX_LATENCY_MS:  # also refuses NaN and the infinities
        raise ValueError(f"latency_ms must be finite, ≥ 0 and ≤ {MAX_LATENCY_MS}, got {value!r}")
    if value < 1:
        return value, 0
    return value, min(int(_log2(value) * 4) + 1, MAX_BUCKET)


class Batch(NamedTuple):
    """One swapped-out interval: rows by spelling, extra histogram counts by row_id + bucket."""

    rows: dict[str, Row]
    histogram: dict[int, int]

    def domains(self) -> Iterator[tuple[str, Row, dict[int, int]]]:
        """(normalized domain, row, {bucket: count}) per row; spellings are not merged here."""
        extra: dict[int, dict[int, int]] = {}
        for key, count in self.histogram.items():
            extra.setdefault(key >> ROW_ID_SHIFT, {})[key & ((1 << ROW_ID_SHIFT) - 1)] = count
        require = DEFAULT_MEMO.require
        for index, (spelling, row) in enumerate(self.rows.items()):
            buckets = extra.get(index, {})
            for bucket_slot, count_slot in INLINE_BUCKETS:
                if row[bucket_slot] >= 0:
                    bucket = row[bucket_slot]
                    buckets[bucket] = buckets.get(bucket, 0) + row[count_slot]
            yield require(spelling), row, buckets


def _new_row(queued: int, rows: dict[str, Row]) -> Row:
    return [0, 0, 0, 0, 0, 0, 0, 0, queued, len(rows) << ROW_ID_SHIFT, -1, 0, -1, 0, 0, -1, 0]


class Recorder:
    """In-process pending deltas of one worker: the recording half of `FederationTracker`."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self._lock = lock
        self._acquire = lock.acquire
        self._release = lock.release
        self._rows: dict[str, Row] = {}
        self._histogram: defaultdict[int, int] = defaultdict(int)
        self._inflight: dict[str, int] = {}
        #: Enqueue times of the in-flight messages: a float for a domain's only message,
        #: an `AgeQueue` for several (kept in step with ``_inflight``).
        self._ages: dict[str, float | AgeQueue] = {}

    def _row(self, spelling: str) -> Row:
        """Create the row of a spelling not seen in this batch (validating it). Lock held."""
        DEFAULT_MEMO.require(spelling)
        rows = self._rows
        row = rows[spelling] = _new_row(NOT_QUEUED, rows)
        return row

    # -- the hot path -----------------------------------------------------------------

    def record_success(self, domain: str, latency_ms: float, transport: str = "") -> None:
        """A successful delivery after `latency_ms`; an empty transport is an inbound one."""
        try:
            slot = SUCCESS_SLOTS[transport]
        except (KeyError, TypeError):
            raise InvalidTransportError(transport) from None
        if latency_ms.__class__ is int and 0 <= latency_ms < 4096:  # _SMALL_LIMIT
            bucket = _SMALL_BUCKETS[latency_ms]
        else:
            latency_ms, bucket = latency_bucket(latency_ms)
        # Row slots are literals here (a module constant costs a dict lookup per use):
        # 6 INBOUND, 7 LATENCY, 9 ROW_ID, 10/11 FIRST_BUCKET/COUNT, 12/13 SECOND_...,
        # 14 HEALTH, 15/16 THIRD_...
        self._acquire()
        try:
            row = self._rows.get(domain)
            if row is None:
                row = self._row(domain)
            row[slot] += 1
            row[7] += latency_ms
            if slot != 6:
                row[14] = 1  # healed, no failure after it
                if row[10] == bucket:
                    row[11] += 1
                elif row[12] == bucket:
                    row[13] += 1
                elif row[15] == bucket:
                    row[16] += 1
                elif row[10] < 0:
                    row[10] = bucket
                    row[11] = 1
                elif row[12] < 0:
                    row[12] = bucket
                    row[13] = 1
                elif row[15] < 0:
                    row[15] = bucket
                    row[16] = 1
                else:
                    self._histogram[row[9] + bucket] += 1
        except TypeError:
            raise InvalidDomainError(domain, "not a string") from None
        finally:
            self._release()

    def record_failure(self, domain: str, transport: str, *, permanent: bool = False) -> None:
        """A failed delivery attempt to `domain` over HTTP, HTTPS or SMTP (any case).

        `permanent` marks a failure the domain's health must not act on (an SMTP 5xx for
        one recipient, an HTTP 4xx other than 401/408/429): it counts in the stats only,
        so one bad address never holds a healthy domain back.
        """
        try:
            slot = FAILURE_SLOTS[transport]
        except (KeyError, TypeError):
            raise InvalidTransportError(transport) from None
        self._acquire()
        try:
            row = self._rows.get(domain)
            if row is None:
                row = self._row(domain)
            row[slot] += 1
            if not permanent:
                row[14] += 2  # HEALTH: one more failure after the last success
        except TypeError:
            raise InvalidDomainError(domain, "not a string") from None
        finally:
            self._release()

    def touch(self, domain: str) -> None:
        """Mark `domain` active (only ``last_active`` changes)."""
        self._acquire()
        try:
            if domain not in self._rows:
                self._row(domain)
        except TypeError:
            raise InvalidDomainError(domain, "not a string") from None
        finally:
            self._release()

    def increment_queue(self, domain: str, *, enqueued_at: float | None = None) -> None:
        """One more message in flight to `domain` from this worker, enqueued now or at
        `enqueued_at` (unix seconds, this worker's clock: a restarted worker re-asserts
        the real ages of the messages it still holds)."""
        name = _normalized(domain)
        enqueued = _now() if enqueued_at is None else enqueue_time(enqueued_at)
        with self._lock:
            inflight = self._inflight
            count = inflight.get(name, 0) + 1
            inflight[name] = count
            rows = self._rows
            row = rows.get(name)
            if row is None:
                rows[name] = _new_row(count, rows)
            else:
                row[QUEUED] = count
            ages = self._ages
            if count == 1:
                ages[name] = enqueued  # one message: its time alone (most domains)
            else:
                queue = ages[name]
                if queue.__class__ is float:
                    queue = ages[name] = AgeQueue.of(queue)
                queue.add(enqueued)  # type: ignore[union-attr]

    def decrement_queue(self, domain: str) -> None:
        """One message fewer in flight to `domain` (never below 0): the oldest one."""
        name = _normalized(domain)
        with self._lock:
            inflight = self._inflight
            count = inflight.get(name, 0)
            if count > 1:
                count -= 1
                inflight[name] = count
                ages = self._ages
                queue = ages[name]
                queue.pop_oldest()  # type: ignore[union-attr]
                if count == 1:  # back to a bare time: a queue costs 160 B for one message
                    ages[name] = queue.oldest()  # type: ignore[union-attr]
            elif count == 1:
                count = 0
                del inflight[name]
                del self._ages[name]
            rows = self._rows
            row = rows.get(name)
            if row is None:
                rows[name] = _new_row(count, rows)
            else:
                row[QUEUED] = count


# -- for the pusher: functions, not methods, so that `FederationTracker` (a `Recorder`)
# offers its users only the recording calls: a user calling ``swap()`` on it would throw a
# batch away.


def take_batch(recorder: Recorder) -> Batch | None:
    """Take `recorder`'s pending batch (None when empty) and start a new one."""
    with recorder._lock:
        rows = recorder._rows
        if not rows:
            return None
        histogram = recorder._histogram
        recorder._rows = {}
        recorder._histogram = defaultdict(int)
    return Batch(rows, dict(histogram))


def inflight_snapshot(recorder: Recorder) -> dict[str, int]:
    """A copy of the worker's in-flight counts (normalized domain → count > 0)."""
    with recorder._lock:
        return dict(recorder._inflight)


def release_inflight(recorder: Recorder) -> int:
    """Set every in-flight count to 0 in the pending batch (for `close`); how many."""
    with recorder._lock:
        inflight = recorder._inflight
        rows = recorder._rows
        for name in inflight:
            row = rows.get(name)
            if row is None:
                rows[name] = _new_row(0, rows)
            else:
                row[QUEUED] = 0
        released = len(inflight)
        inflight.clear()
        return released


def pending_spellings(recorder: Recorder) -> int:
    """Domain spellings touched since the last `take_batch`."""
    with recorder._lock:
        return len(recorder._rows)


#: Earliest enqueue time accepted (2000-01-01): anything before is a unit mistake.
EARLIEST_ENQUEUE = 946_684_800.0


def enqueue_time(value: object) -> float:
    """Validate an ``enqueued_at`` (unix seconds, finite, not before 2000, not a bool);
    raises `InvalidValueError`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(f"enqueued_at must be unix seconds, got {value!r}")
    seconds = float(value)
    if not EARLIEST_ENQUEUE <= seconds < math.inf:  # also refuses NaN
        raise InvalidValueError(
            f"enqueued_at must be finite unix seconds after 2000-01-01, got {value!r}"
        )
    return seconds


def _normalized(domain: str) -> str:
    try:
        return DEFAULT_MEMO.require(domain)
    except TypeError:  # unhashable: no domain at all
        raise InvalidDomainError(domain, "not a string") from None
