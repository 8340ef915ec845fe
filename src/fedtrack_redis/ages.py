"""Queue ages (qshape) on the worker: its in-flight messages' enqueue times per domain, and
the per-column counts its lease carries (G8).

Columns are Postfix's ``qshape`` ones, half-open by age: ``5`` is under 5 minutes, ``10``
is [5, 10), …, ``1280+`` is 1,280 minutes or more (`COLUMNS`; `column_counts`).

The hot path (`batch.Recorder.increment_queue` / ``decrement_queue``) only stores or
drops an enqueue time — a bare float for a domain's only message (most domains), an
`AgeQueue` for several, first in, first out: it never computes ages (walking a
10k-message list under the recorder lock held it for milliseconds). The pusher thread
(`AgeTracker.changes`) does, for the domains a queue call touched (their batch row
carries a count) and those whose next message reaches a boundary (a heap of due times):
a queue whose oldest message is under 5 minutes costs one look, any other a binary
search per column boundary. What goes to Redis is only the columns from 5 minutes on
that changed, as absolute counts, so a retried chunk can never count twice and a worker
whose lease was released can re-send them all.
"""

from __future__ import annotations

import heapq
import threading
from array import array
from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batch import Recorder

#: The qshape header: T (the sum), then the age columns in minutes.
COLUMNS = ("T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+")
#: Number of age columns (without T).
AGE_COLUMNS = len(COLUMNS) - 1
#: The lower bound, in seconds, of every column after the first: column k + 1 holds the
#: ages in [BOUNDARIES[k], BOUNDARIES[k + 1]).
BOUNDARIES = (300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0, 19200.0, 38400.0, 76800.0)
#: Consumed times kept at the head of an `AgeQueue` before its array is compacted.
_COMPACT_AFTER = 32
#: Domains whose columns the pusher evaluates per hold of the recorder lock (keeps each
#: hold to tens of microseconds, so the hot path never waits long).
EVALUATE_SLICE = 32
_NEVER = float("inf")


def column_of(age_seconds: float) -> int:
    """The age column (0 = ``5`` … 9 = ``1280+``) of one age; a negative age (a clock
    ahead of this one) counts as new."""
    return bisect_right(BOUNDARIES, age_seconds)


def column_counts(times: list[float], now: float) -> list[int]:
    """The ten column counts of enqueue `times` at `now` (the reference rule that
    `AgeQueue` computes incrementally)."""
    counts = [0] * AGE_COLUMNS
    for enqueued in times:
        counts[column_of(now - enqueued)] += 1
    return counts


class AgeQueue:
    """The enqueue times (worker clock, unix seconds) of one domain's in-flight messages,
    oldest first, in an ``array('d')`` (8 bytes a message) read from index `head` on.

    Sorted, so a column's count is the distance between two binary searches (C code,
    O(log n)): evaluating a 10,000-message queue costs a few microseconds, never a walk.
    """

    __slots__ = ("head", "times")

    def __init__(self) -> None:
        self.times = array("d")
        self.head = 0

    @classmethod
    def of(cls, first: float) -> AgeQueue:
        """A queue holding one message enqueued at `first`."""
        queue = cls()
        queue.times.append(first)
        return queue

    def __len__(self) -> int:
        return len(self.times) - self.head

    def add(self, enqueued: float) -> None:
        """One more message, enqueued at `enqueued` (kept in time order). Lock held."""
        times = self.times
        if not times or enqueued >= times[-1]:
            times.append(enqueued)
        else:  # an older time (a restarted worker re-asserting real ages): in order
            times.insert(bisect_right(times, enqueued, self.head), enqueued)

    def oldest(self) -> float:
        """The enqueue time of the oldest message still in flight."""
        return self.times[self.head]

    def pop_oldest(self) -> None:
        """One message fewer: the oldest leaves (first in, first out). Lock held."""
        head = self.head + 1
        times = self.times
        if head >= _COMPACT_AFTER and head * 2 >= len(times):
            del times[:head]
            head = 0
        self.head = head

    def evaluate(self, now: float) -> tuple[list[int], float]:
        """The ten column counts at `now`, and when the next message reaches a boundary
        (unix seconds; inf when none will). Lock held."""
        times = self.times
        head = self.head
        size = len(times)
        first = BOUNDARIES[0]
        oldest = times[head]
        if now - oldest < first:  # every message under 5 minutes (most queues)
            return [size - head, 0, 0, 0, 0, 0, 0, 0, 0, 0], oldest + first
        counts = [0] * AGE_COLUMNS
        due = _NEVER
        previous = size  # where the previous (younger) column starts
        for k, boundary in enumerate(BOUNDARIES):
            # messages enqueued at or before now - boundary are that old: [head, cut)
            cut = bisect_right(times, now - boundary, head, previous)
            if cut < size:
                due = min(due, times[cut] + boundary)  # the next one to reach it
            counts[k] = previous - cut  # column k: ages in [BOUNDARIES[k - 1], BOUNDARIES[k])
            previous = cut
            if cut == head:  # nothing older: every further column is empty
                break
        counts[AGE_COLUMNS - 1] = previous - head  # 1280+: every message past the last one
        return counts, due


class AgeTracker:
    """The pusher's half: which domains' columns changed since the lease last got them.

    Only the columns from ``10`` on (5 minutes or more, indexes 1…9) travel: the first
    one is the domain's in-flight count (T, which the lease already carries) minus the
    others, so a message queued or delivered young costs the push nothing more.
    `expected` holds, per domain with such messages, the nine counts the worker's lease
    will hold once every change handed out so far is applied; `changes` hands out the
    columns that differ now.
    """

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.expected: dict[str, list[int]] = {}  # domain -> columns 1..9
        self._due: list[tuple[float, str]] = []
        self._due_of: dict[str, float] = {}

    def changes(self, now: float, touched: set[str]) -> dict[str, dict[int, int]]:
        """Domain → {column: absolute count} for every column that changed (at `now`,
        worker clock) among the `touched` domains (a queue call changed their count) and
        those whose next message reached a boundary. Takes the recorder lock in short
        slices."""
        recorder = self._recorder
        lock: threading.Lock = recorder._lock
        due = self._due
        while due and due[0][0] <= now:
            _when, name = heapq.heappop(due)
            if self._due_of.get(name) == _when:
                del self._due_of[name]
                touched.add(name)
        if not touched:
            return {}
        names = list(touched)
        first = BOUNDARIES[0]
        changed: dict[str, dict[int, int]] = {}
        held_of = self.expected.get
        due_of = self._due_of
        due_get = due_of.get
        queues = recorder._ages
        for start in range(0, len(names), EVALUATE_SLICE):
            # Under the lock only what reads the queues; the common case (every message
            # under 5 minutes, nothing older held) costs a look at the oldest message.
            with lock:
                for name in names[start : start + EVALUATE_SLICE]:
                    queue = queues.get(name)
                    held = held_of(name)
                    if queue is None:
                        older = None
                        when = _NEVER
                    else:
                        single = queue.__class__ is float
                        oldest: float = queue if single else queue.times[queue.head]  # type: ignore[assignment, union-attr]
                        if now - oldest < first:
                            when = oldest + first
                            if held is None:
                                if when < due_get(name, _NEVER):
                                    due_of[name] = when
                                    heapq.heappush(due, (when, name))
                                continue
                            older = None
                        elif single:
                            older, when = _single(oldest, now)
                        else:
                            counts, when = queue.evaluate(now)  # type: ignore[union-attr]
                            older = counts[1:]
                    self._settle(name, older, held, when, changed)
        return changed

    def _settle(
        self,
        name: str,
        older: list[int] | None,
        held: list[int] | None,
        when: float,
        changed: dict[str, dict[int, int]],
    ) -> None:
        """Record in `changed` what differs from what the lease will hold; note the next
        move of `name` (a domain with messages 5 minutes old or more, or once had)."""
        expected = self.expected
        if older is None or not any(older):
            if held is not None:
                changed[name] = {k: 0 for k, h in enumerate(held, 1) if h}
                del expected[name]
        elif held is None:
            changed[name] = {k: c for k, c in enumerate(older, 1) if c}
            expected[name] = older
        elif older != held:
            diff = {}
            for k in range(AGE_COLUMNS - 1):
                if older[k] != held[k]:
                    diff[k + 1] = older[k]
            changed[name] = diff
            expected[name] = older
        if when < self._due_of.get(name, _NEVER):
            self._due_of[name] = when
            heapq.heappush(self._due, (when, name))

    def full(self, name: str) -> dict[int, int]:
        """Every non-zero column (1…9) the lease should hold for `name` (to re-send after
        the lease was found absent)."""
        return {k: c for k, c in enumerate(self.expected.get(name, ()), 1) if c}


def _single(enqueued: float, now: float) -> tuple[list[int], float]:
    """Columns 1..9 and the next move of a domain's only message (5 minutes old or more)."""
    older = [0] * (AGE_COLUMNS - 1)
    column = column_of(now - enqueued)
    older[column - 1] = 1
    return older, enqueued + BOUNDARIES[column] if column < len(BOUNDARIES) else _NEVER


def release_ages(recorder: Recorder) -> None:
    """Drop every in-flight enqueue time (for `close`, after `batch.release_inflight`,
    whose rows make the next push send zeros for every column the lease holds)."""
    with recorder._lock:
        recorder._ages.clear()
