"""What every soak child process shares: its `Config`, its status file (`Status`), the
SIGTERM stop event and the policy-view helpers.

A role writes ``status-<name>.json`` atomically every 0.2 s: what its process sees
(policy version, rules digest, the versions its store applied and when, leadership, push
counters), which long-lived library threads (``fedtrack-*``) died while it ran, and the
``fedtrack_thread_errors`` counters; a role whose parent (the coordinator) is gone exits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from fedtrack_redis import FedtrackError, PolicyStore

STATUS_EVERY = 0.2


@dataclass
class Config:
    """Everything a role needs; written by the coordinator as JSON."""

    run_dir: str
    redis_url: str
    database_url: str
    wrong_pg_url: str
    sqlite_url: str
    namespace: str
    seed: int
    domains: int
    #: Events drawn per tick (every `tick` seconds) by each worker.
    events_per_tick: int
    tick: float
    #: Seconds between the worker's own ``push()`` calls (each acknowledged one is a
    #: ledger ``ack``); the tracker's thread pushes every `push_interval` meanwhile.
    interval: float
    push_interval: float
    push_timeout: float
    lease_ttl: float
    flush_interval: float
    lock_ttl: float
    op_interval: float

    @classmethod
    def load(cls, path: Path) -> Config:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))


def rules_digest(rules: Iterable[object], policy: str) -> str:
    """A short digest of a rule set (rule texts) and a policy."""
    text = json.dumps([sorted(str(rule) for rule in rules), policy])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def store_view(store: PolicyStore) -> dict[str, Any]:
    try:
        rules = store.list_rules()
        policy = store.get_policy()
    except FedtrackError as exc:
        return {"view_error": str(exc)}
    return {
        "version": store.version,
        "policy": policy,
        "rules": len(rules),
        "digest": rules_digest(rules, policy),
    }


def thread_errors() -> dict[str, float]:
    """The ``fedtrack_thread_errors_total`` counters of this process, by thread."""
    found: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name == "fedtrack_thread_errors":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["thread"]] = sample.value
    return found


class Status(threading.Thread):
    """Writes the role's status file every `STATUS_EVERY` seconds; notices library threads
    (``fedtrack-*``, alive for at least 3 s) that die while the role runs."""

    def __init__(self, run_dir: Path, name: str, role: str, report: Callable[[], dict[str, Any]]):
        super().__init__(name="soak-status", daemon=True)
        self.path = run_dir / f"status-{name}.json"
        self.base = {"name": name, "role": role, "pid": os.getpid()}
        self.report = report
        self.parent = os.getppid()
        self.stopping = False
        self._seen: dict[int, tuple[str, float, threading.Thread]] = {}
        self._lock = threading.Lock()  # the role's last write races the thread's
        self.died: list[str] = []

    def run(self) -> None:
        while True:
            if os.getppid() != self.parent:  # the coordinator is gone: do not linger
                os._exit(70)
            self.write()
            time.sleep(STATUS_EVERY)

    def _threads(self) -> None:
        now = time.monotonic()
        alive = {t.ident: t for t in threading.enumerate() if t.name.startswith("fedtrack-")}
        for ident, thread in alive.items():
            if ident is not None and ident not in self._seen:
                self._seen[ident] = (thread.name, now, thread)
        for ident, (name, first, thread) in list(self._seen.items()):
            if not thread.is_alive():
                del self._seen[ident]
                if now - first >= 3.0 and not self.stopping:
                    self.died.append(name)

    def write(self, **extra: Any) -> None:
        with self._lock:
            self._write(extra)

    def _write(self, extra: dict[str, Any]) -> None:
        try:
            self._threads()
            data = {**self.base, "time": time.time(), **self.report(), **extra}
        except Exception as exc:  # report, never die: the coordinator watches this file
            data = {**self.base, "time": time.time(), "status_error": repr(exc)}
        data["threads_died"] = list(self.died)
        data["thread_errors"] = thread_errors()
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self.path)


def stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def follow(store: PolicyStore) -> deque[tuple[int, float]]:
    """(version, wall time) of the last policy changes this process applied (listener)."""
    applied: deque[tuple[int, float]] = deque(maxlen=64)
    store.add_listener(lambda change: applied.append((change.version, time.time())))
    return applied
