"""The soak's child processes: ``python -m benchmarks.soak_roles ROLE --config FILE --name N``.

Roles, each using the library's public API only:

* ``worker`` — a `FederationTracker` plus a `PolicyStore` with `check_federation_policy`
  on its hot path, recording its seeded mix and keeping its ledger (`soak_ledger`);
* ``flusher`` — a `Flusher` (the two of them elect one leader) and a `PolicyStore`;
* ``operator`` — changes rules and the policy every ``op_interval`` seconds (at once on
  SIGUSR1), retrying each change until it is committed (changes are idempotent), and
  logs every change and the state it intends;
* ``wrongdb`` — the misconfigured worker (`benchmarks.soak_wrongdb`).

Every role writes its status file (`benchmarks.soak_process.Status`). SIGTERM stops a
role cleanly (``close()``/``stop()``); a role whose parent is gone exits at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.soak_ledger import (
    LOCAL_DOMAIN,
    Event,
    LedgerWriter,
    Mix,
    count_events,
    deltas,
    population,
)
from benchmarks.soak_process import Config, Status, follow, rules_digest, stop_event, store_view
from fedtrack_redis import (
    BackendUnavailableError,
    FederationTracker,
    FedtrackError,
    Flusher,
    PolicyStore,
    PropagationPendingError,
    check_federation_policy,
)
from fedtrack_redis.errors import DatabaseMismatchError

# -- worker -----------------------------------------------------------------------------------


def run_worker(config: Config, name: str, worker_id: str, seed: int) -> None:
    """Record a tick's events every `tick` s (ledger first), ``push()`` every `interval` s."""
    stop = stop_event()  # before the tracker: the application owns SIGTERM
    run_dir = Path(config.run_dir)
    store = PolicyStore(config.database_url, config.redis_url, namespace=config.namespace)
    applied = follow(store)
    store.init()
    tracker = FederationTracker(
        config.redis_url,
        namespace=config.namespace,
        worker_id=worker_id,
        push_interval=config.push_interval,
        lease_ttl=config.lease_ttl,
    )
    mix = Mix(seed, population(config.domains), config.events_per_tick)
    ledger = LedgerWriter(run_dir / f"ledger-{worker_id}.jsonl")
    ledger.write(t="start", worker=worker_id, seed=seed, pid=os.getpid(), time=time.time())
    counts = {"n": 0, "acked_n": 0, "fails": 0, "refused": 0, "checked": 0, "last_ack": 0.0}

    def report() -> dict[str, Any]:
        stats = dataclasses.asdict(tracker.push_stats)
        view = store_view(store)
        return {"worker_id": worker_id, **counts, **view, "applied": list(applied), "push": stats}

    status = Status(run_dir, name, "worker", report)
    status.start()
    next_tick = time.monotonic()
    next_push = next_tick + config.interval
    while not stop.is_set():
        counts["n"] += 1
        recorded = _allowed(mix.interval(), store, counts)
        changes = deltas(recorded)
        events = count_events(changes)
        ledger.write(t="rec", n=counts["n"], time=time.time(), events=events, d=changes)
        for event in recorded:
            _record(tracker, event)
        if time.monotonic() >= next_push:
            _push(tracker, ledger, counts, config.push_timeout)
            next_push = max(next_push + config.interval, time.monotonic())
        next_tick += config.tick
        delay = next_tick - time.monotonic()
        if delay < 0:
            next_tick = time.monotonic()
        stop.wait(max(0.0, delay))
    status.stopping = True
    for spelling, _name in mix.inflight:  # the messages in flight are done
        tracker.decrement_queue(spelling)
    try:
        tracker.close()
    except FedtrackError as exc:
        ledger.write(t="closed", time=time.time(), error=f"{type(exc).__name__}: {exc}")
    else:
        ledger.write(t="closed", time=time.time())
    store.close()
    ledger.close()
    status.write(stopped=True)


def _push(
    tracker: FederationTracker, ledger: LedgerWriter, counts: dict[str, Any], timeout: float
) -> None:
    """``push()``; once it returns, everything recorded so far is acknowledged."""
    started = time.time()
    try:
        tracker.push(timeout=timeout)
    except BackendUnavailableError as exc:
        counts["fails"] += 1
        ledger.write(t="fail", n=counts["n"], started=started, time=time.time(), error=str(exc))
    else:
        counts["acked_n"], counts["last_ack"] = counts["n"], time.time()
        ledger.write(t="ack", n=counts["n"], started=started, time=counts["last_ack"])


def _allowed(events: list[Event], store: PolicyStore, counts: dict[str, Any]) -> list[Event]:
    """The events a relay would record: deliveries only to domains the policy allows."""
    kept: list[Event] = []
    for event in events:
        if event.kind in ("success", "failure"):
            counts["checked"] += 1
            if not check_federation_policy(event.spelling, local_domain=LOCAL_DOMAIN, store=store):
                counts["refused"] += 1
                continue
        kept.append(event)
    return kept


def _record(tracker: FederationTracker, event: Event) -> None:
    if event.kind == "success":
        tracker.record_success(event.spelling, event.latency_ms, event.transport)
    elif event.kind == "failure":
        tracker.record_failure(event.spelling, event.transport)
    elif event.kind == "touch":
        tracker.touch(event.spelling)
    elif event.kind == "enqueue":
        tracker.increment_queue(event.spelling)
    else:
        tracker.decrement_queue(event.spelling)


# -- flusher ----------------------------------------------------------------------------------


def run_flusher(config: Config, name: str) -> None:
    stop = stop_event()
    flusher = Flusher(
        config.redis_url,
        config.database_url,
        namespace=config.namespace,
        interval=config.flush_interval,
        lock_ttl=config.lock_ttl,
    ).start()
    store = PolicyStore(config.database_url, config.redis_url, namespace=config.namespace)
    applied = follow(store)
    store.init()

    def report() -> dict[str, Any]:
        return {
            "applied": list(applied),
            "is_leader": flusher.is_leader,
            "mismatch": flusher.mismatch,
            "database_id": flusher.database_id,
            **store_view(store),
        }

    status = Status(Path(config.run_dir), name, "flusher", report)
    status.start()
    stop.wait()
    status.stopping = True
    flusher.stop()
    store.close()
    status.write(stopped=True, is_leader=False)


# -- operator ---------------------------------------------------------------------------------


def run_operator(config: Config, name: str, seed: int) -> None:
    stop = stop_event()
    now = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: now.set())
    run_dir = Path(config.run_dir)
    store = PolicyStore(config.database_url, config.redis_url, namespace=config.namespace).init()
    log = LedgerWriter(run_dir / "operator.jsonl")
    rng = random.Random(seed)
    traffic = Mix(0, population(config.domains), 1).names
    pool = traffic[: config.domains // 3 : 5] + [f"r{i}.rules.soak.example" for i in range(10)]
    rules: set[str] = set(store.list_rules())
    policy = store.get_policy()
    log.write(t="start", time=time.time(), rules=sorted(rules), policy=policy)
    counts = {"ops": 0, "retries": 0, "gave_up": 0}

    def report() -> dict[str, Any]:
        return {**counts, **store_view(store), "intended": rules_digest(rules, policy)}

    status = Status(run_dir, name, "operator", report)
    status.start()
    while not stop.is_set():
        triggered = now.wait(config.op_interval)
        now.clear()
        if stop.is_set():
            break
        started = time.time()
        if rng.random() < 0.08:
            op, arg = "set_policy", "REJECT" if rng.random() < 0.2 else "ACCEPT"
        elif rules and rng.random() < 0.4:
            op, arg = "remove_rule", rng.choice(sorted(rules))
        else:
            op, arg = "add_rule", rng.choice(pool)
        outcome = _change(store, op, arg)
        counts["ops"] += 1
        counts["retries"] += len(outcome["errors"])
        if outcome["done"]:
            if op == "set_policy":
                policy = arg
            elif op == "add_rule":
                rules.add(arg)
            else:
                rules.discard(arg)
        else:
            counts["gave_up"] += 1
        intended = rules_digest(rules, policy)
        done_at = time.time()
        log.write(
            t="op",
            op=op,
            arg=arg,
            started=started,
            time=done_at,
            **outcome,
            triggered=triggered,
            version=store.version,
            intended=intended,
        )
    status.stopping = True
    log.write(t="final", time=time.time(), rules=sorted(rules), policy=policy)
    store.close()
    log.close()
    status.write(stopped=True)


def _change(store: PolicyStore, op: str, arg: str) -> dict[str, Any]:
    """Apply one change, retrying until it is committed (all three are idempotent). An
    exception outside `FedtrackError` is a library bug: logged as ``UNEXPECTED``, and the
    change retried like the others."""
    errors: list[str] = []
    deadline = time.monotonic() + 60.0
    delay = 0.1
    action: Callable[[str], object] = getattr(store, op)
    while True:
        try:
            action(arg)
            return {"done": True, "pending": False, "errors": errors}
        except PropagationPendingError as exc:  # committed; Redis catches up later
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return {"done": True, "pending": True, "errors": errors}
        except (BackendUnavailableError, DatabaseMismatchError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        except Exception as exc:
            logging.getLogger("soak.operator").exception("%s(%r) raised", op, arg)
            errors.append(f"UNEXPECTED {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])
        if time.monotonic() + delay > deadline:
            return {"done": False, "pending": False, "errors": errors}
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_roles")
    parser.add_argument("role", choices=["worker", "flusher", "operator", "wrongdb"])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--worker-id")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {options.name} %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    config = Config.load(options.config)
    if options.role == "worker":
        run_worker(config, options.name, options.worker_id or options.name, options.seed)
    elif options.role == "flusher":
        run_flusher(config, options.name)
    elif options.role == "operator":
        run_operator(config, options.name, options.seed)
    else:
        from benchmarks.soak_wrongdb import run_wrongdb

        run_wrongdb(config, options.name)


if __name__ == "__main__":
    main()
