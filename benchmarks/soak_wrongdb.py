"""The soak's misconfigured worker: ``python -m benchmarks.soak_roles wrongdb …``.

One process given the WRONG database, twice over: a second PostgreSQL database (staging)
and a SQLite file, each with its own identity (G11). It runs a `Flusher` and a
`PolicyStore` on each, and a `FederationTracker` whose push Redis acknowledged (so it
knows the namespace's identity). For as long as it lives:

* no flusher of it may ever lead, and each one's ``mismatch`` must stay set once set;
* every 2 s each probe must raise `DatabaseMismatchError`: ``add_rule``, ``set_policy``,
  ``flush_once`` on each database, and ``tracker.hydrate(database)`` (a probe that Redis
  or the database being down makes fail is counted as *unavailable*, not refused);
* anything else (accepted, another exception) is a violation, counted by message.

It stays up to the end of the soak, through the Redis restart drill: a process that
forgets the identity it was refused for would hydrate the empty Redis from its database.
The coordinator also dumps both databases' tables before and after: nothing may be
written there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.soak_process import Config, Status, stop_event
from fedtrack_redis import (
    BackendUnavailableError,
    FederationTracker,
    FedtrackError,
    Flusher,
    PolicyStore,
)
from fedtrack_redis.errors import DatabaseMismatchError

#: A domain only the misconfigured process touches, and the rule it tries to add.
PROBE_DOMAIN = "wrongdb-probe.soak.example"
PROBE_RULE = "wrongdb-rule.soak.example"


def run_wrongdb(config: Config, name: str) -> None:
    stop = stop_event()
    targets = {"postgresql": config.wrong_pg_url, "sqlite": config.sqlite_url}
    flushers = {
        kind: Flusher(
            config.redis_url,
            url,
            namespace=config.namespace,
            interval=config.flush_interval,
            lock_ttl=config.lock_ttl,
        ).start()
        for kind, url in targets.items()
    }
    stores = {
        kind: PolicyStore(url, config.redis_url, namespace=config.namespace).init()
        for kind, url in targets.items()
    }
    tracker = FederationTracker(
        config.redis_url, namespace=config.namespace, worker_id=f"wrongdb-{os.getpid()}"
    )
    tracker.touch(PROBE_DOMAIN)  # an acknowledged push: the tracker now knows the identity
    tracker.push(timeout=30.0)
    state: dict[str, Any] = {
        "answered": {},
        "refused": {},
        "unavailable": {},
        "violations": {},
        "refusing": {},
    }

    def violation(text: str) -> None:
        state["violations"][text] = state["violations"].get(text, 0) + 1

    def probe(label: str, action: Callable[[], object]) -> None:
        state["answered"][label] = state["answered"].get(label, 0) + 1
        try:
            result = action()
        except DatabaseMismatchError:
            state["refused"][label] = state["refused"].get(label, 0) + 1
        except BackendUnavailableError:
            state["unavailable"][label] = state["unavailable"].get(label, 0) + 1
        except Exception as exc:
            violation(f"{label}: raised {type(exc).__name__}: {exc}"[:300])
        else:
            violation(f"{label}: accepted (returned {result!r})")

    def report() -> dict[str, Any]:
        return {
            "is_leader": any(f.is_leader for f in flushers.values()),
            "mismatch": {kind: f.mismatch is not None for kind, f in flushers.items()},
            **state,
        }

    status = Status(Path(config.run_dir), name, "wrongdb", report)
    status.start()
    next_probe = 0.0
    while not stop.is_set():
        for kind, flusher in flushers.items():
            if flusher.is_leader:
                violation(f"flusher on the {kind} database became leader")
            if flusher.mismatch is not None:
                state["refusing"][kind] = True
            elif state["refusing"].get(kind):
                state["refusing"][kind] = False
                violation(f"flusher on the {kind} database stopped refusing (its mismatch cleared)")
        if time.monotonic() >= next_probe:
            next_probe = time.monotonic() + 2.0
            for kind, url in targets.items():
                store = stores[kind]
                probe(f"{kind}: add_rule", functools.partial(store.add_rule, PROBE_RULE))
                probe(f"{kind}: set_policy", functools.partial(store.set_policy, "REJECT"))
                probe(f"{kind}: flush_once", flushers[kind].flush_once)
                probe(f"{kind}: tracker.hydrate", functools.partial(tracker.hydrate, url))
        stop.wait(0.1)
    status.stopping = True
    for flusher in flushers.values():
        flusher.stop()
    for store in stores.values():
        store.close()
    with contextlib.suppress(FedtrackError):
        tracker.close()
    status.write(stopped=True, is_leader=False)
