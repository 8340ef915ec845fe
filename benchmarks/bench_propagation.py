"""Policy propagation: from the start of `add_rule` to the change being visible in 8
other processes, p50/p99, with the processes idle and while they run the hot path flat out.

    .venv/bin/python -m benchmarks.bench_propagation [--quick]

Each child process holds its own PolicyStore (10,000 rules loaded); a listener stamps the
moment its cache holds the change's version (CLOCK_MONOTONIC is shared by all processes
on Linux), whether the change arrived as its own message or within a full resync.
Baseline beside it: the raw pub/sub delivery of one PUBLISH to the same 8 processes.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import redis

from benchmarks.common import (
    Env,
    delete_namespace,
    median,
    percentile,
    scratch_database,
    standalone_main,
)
from benchmarks.report import Report

PROCESSES = 8
RULES = 10_000


def child(pipe: Connection, redis_url: str, database_url: str, namespace: str, busy: bool) -> None:
    from fedtrack_redis import PolicyStore, check_federation_policy
    from fedtrack_redis.batch import Recorder, take_batch
    from fedtrack_redis.policy.state import Change

    store = PolicyStore(database_url, redis_url, namespace=namespace).init()
    stop = threading.Event()

    def seen(change: Change) -> None:
        pipe.send(("change", store.version, change.op, time.perf_counter()))

    store.add_listener(seen)
    raw = redis.Redis.from_url(redis_url)
    pubsub = raw.pubsub()
    pubsub.subscribe(f"bench-raw:{namespace}")

    def raw_listener() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                pipe.send(("raw", int(message["data"]), "", time.perf_counter()))

    listener = threading.Thread(target=raw_listener, daemon=True)
    listener.start()
    domains = [f"d{i}.example" for i in range(1000)]
    recorder = Recorder()

    def hot_loop() -> None:
        # The hot path flat out: a policy check and a recorded delivery per message.
        check, record = check_federation_policy, recorder.record_success
        while not stop.is_set():
            for domain in domains:
                if check(domain, local_domain="mail.example", store=store):
                    record(domain, 120, "HTTPS")
            take_batch(recorder)

    worker = threading.Thread(target=hot_loop, daemon=True) if busy else None
    if worker is not None:
        worker.start()
    pipe.send(("ready", store.count(), "", 0.0))
    pipe.recv()  # wait for "quit"
    stop.set()
    if worker is not None:
        worker.join()
    listener.join()
    pubsub.close()
    raw.close()
    store.close()


def run_mode(
    env: Env, rounds: int, busy: bool, database_url: str, namespace: str, metadata: bool = False
) -> dict[str, Any]:
    """`rounds` rule changes seen by `PROCESSES` processes; with `metadata`, each change
    adds a ``.domain`` block rule with a reason, a private comment and an expiry."""
    from fedtrack_redis import PolicyStore

    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(PROCESSES):
        parent, child_end = context.Pipe()
        process = context.Process(
            target=child, args=(child_end, env.redis_url, database_url, namespace, busy)
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    loaded = []
    for pipe in pipes:
        kind, count, _, _ = pipe.recv()
        assert kind == "ready"
        loaded.append(count)
    # the writer is an admin process, as the API is: it keeps its database connections
    writer = PolicyStore(
        database_url, env.redis_url, namespace=namespace, database_pool=True
    ).init()
    publisher = redis.Redis.from_url(env.redis_url)
    samples: list[float] = []
    all_visible: list[float] = []
    raw_samples: list[float] = []
    calls: list[float] = []
    resyncs = [0]
    rng = random.Random(3)
    if busy:
        time.sleep(0.5)  # let the hot loops run flat out
    try:
        for index in range(rounds):
            domain = f"rule{index}.{'busy' if busy else 'idle'}.example"
            start = time.perf_counter()
            if metadata:
                writer.add_rule(
                    "." + domain,
                    effect="block",
                    reason=f"spam wave {index}, reported by two users",
                    private_comment="ticket 4711",
                    expires_at=int(time.time()) + 86400,
                )
            else:
                writer.add_rule(domain)
            calls.append((time.perf_counter() - start) * 1000)
            version = writer.version
            stamps = [_wait_version(pipe, version, resyncs) for pipe in pipes]
            samples += [(stamp - start) * 1000 for stamp in stamps]
            all_visible.append((max(stamps) - start) * 1000)
            start = time.perf_counter()
            publisher.publish(f"bench-raw:{namespace}", str(index))
            raw_samples += [(_wait_raw(pipe, index) - start) * 1000 for pipe in pipes]
            time.sleep(rng.uniform(0.005, 0.015))  # spread the changes like real operators
    finally:
        for pipe in pipes:
            pipe.send("quit")
        for process in processes:
            process.join(30)
        writer.close()
        publisher.close()
    return {
        "samples": samples,
        "all_visible": all_visible,
        "raw": raw_samples,
        "add_rule": calls,
        "resyncs": resyncs[0],
        "rules_loaded": min(loaded),
    }


def _wait_version(pipe: Connection, version: int, resyncs: list[int]) -> float:
    while True:
        if not pipe.poll(10):
            raise TimeoutError(f"no process reported version {version}")
        kind, seen, op, stamp = pipe.recv()
        if kind != "change":
            continue
        if op == "resync":
            resyncs[0] += 1
        if seen >= version:
            return float(stamp)


def _wait_raw(pipe: Connection, index: int) -> float:
    while True:
        if not pipe.poll(10):
            raise TimeoutError(f"no raw message {index}")
        kind, seen, _op, stamp = pipe.recv()
        if kind == "raw" and seen == index:
            return float(stamp)


def run(env: Env, report: Report) -> None:
    from fedtrack_redis import PolicyStore

    section = "propagation"
    rounds = 20 if env.quick else 300
    namespace = env.namespace()
    results: dict[str, dict[str, Any]] = {}
    try:
        with scratch_database(env.admin_url) as database_url:
            seed = PolicyStore(database_url, env.redis_url, namespace=namespace).init()
            try:
                seed.add_rules(f"blocked{i}.example.net" for i in range(RULES))
            finally:
                seed.close()
            for mode in ("idle", "busy"):
                print(f"  propagation: {mode}, {rounds} changes", flush=True)
                results[mode] = run_mode(env, rounds, mode == "busy", database_url, namespace)
    finally:
        delete_namespace(namespace, env.redis_url)
    report.series["propagation"] = {
        "idle": results["idle"]["samples"],
        "busy": results["busy"]["samples"],
        "raw PUBLISH idle": results["idle"]["raw"],
        "raw PUBLISH busy": results["busy"]["raw"],
    }
    for mode, target in (("idle", 10.0), ("busy", 25.0)):
        r = results[mode]
        report.check(
            section,
            f"every change reached all {PROCESSES} processes ({mode})",
            len(r["samples"]) == rounds * PROCESSES and r["rules_loaded"] >= RULES,
            f"{len(r['samples'])} (change, process) pairs; {r['rules_loaded']:,} rules in each"
            " cache at start",
        )
        samples = r["samples"]
        report.figure(
            section,
            f"add_rule → visible in {PROCESSES} processes, {mode}: p99",
            percentile(samples, 99),
            "ms",
            target=("<=", target),
            baseline=(
                f"raw PUBLISH to the same processes p50 {median(r['raw']):.2f} ms /"
                f" p99 {percentile(r['raw'], 99):.2f} ms"
            ),
            note=(
                f"{rounds} changes x {PROCESSES} processes"
                + (
                    ", each running check_federation_policy + record_success flat out in a"
                    " thread (8 busy processes on 2 cores)"
                    if mode == "busy"
                    else ""
                )
                + f": p50 {median(samples):.2f} ms, p99 {percentile(samples, 99):.2f} ms,"
                f" max {max(samples):.2f} ms; all {PROCESSES} processes: p50"
                f" {median(r['all_visible']):.2f} ms, p99 {percentile(r['all_visible'], 99):.2f}"
                f" ms. {r['resyncs']} full resync(s) seen. The time includes add_rule's own"
                f" work: the call alone took p50 {median(r['add_rule']):.2f} ms, p99"
                f" {percentile(r['add_rule'], 99):.2f} ms (a PostgreSQL transaction whose COMMIT"
                " waits for the WAL flush, then the Redis script that publishes)."
            ),
        )
        report.figure(
            section,
            f"add_rule → visible, {mode}: p50",
            median(samples),
            "ms",
            headline=False,
        )


def main() -> None:
    standalone_main(__doc__, run, "a few rounds, to check it runs")


if __name__ == "__main__":
    main()
