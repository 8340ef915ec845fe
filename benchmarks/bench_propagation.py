"""Policy propagation (§5): from the start of `add_rule` to the change being visible in 8
other processes, p50/p99, with the processes idle and while they run the hot path flat out.

    .venv/bin/python -m benchmarks.bench_propagation [--quick]

Each child process holds its own PolicyStore; a listener stamps the moment the change
is applied to its cache (CLOCK_MONOTONIC is shared by all processes on Linux). Baseline
beside it: the raw pub/sub delivery of one PUBLISH to the same 8 processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import threading
import time
from multiprocessing.connection import Connection

import redis

from benchmarks.common import (
    REDIS_URL,
    delete_namespace,
    machine,
    median,
    percentile,
    scratch_database,
    scratch_namespace,
)

PROCESSES = 8


def child(pipe: Connection, database_url: str, namespace: str, busy: bool) -> None:
    from fedtrack_redis import PolicyStore, check_federation_policy
    from fedtrack_redis.policy.state import Change

    store = PolicyStore(database_url, REDIS_URL, namespace=namespace).init()
    stop = threading.Event()

    def seen(change: Change) -> None:
        pipe.send((change.domain, time.perf_counter()))

    store.add_listener(seen)
    raw = redis.Redis.from_url(REDIS_URL)
    pubsub = raw.pubsub()
    pubsub.subscribe(f"bench-raw:{namespace}")

    def raw_listener() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                pipe.send(("raw:" + message["data"].decode(), time.perf_counter()))

    listener = threading.Thread(target=raw_listener, daemon=True)
    listener.start()
    pipe.send("ready")
    domains = [f"d{i}.example" for i in range(1000)]

    def hot_loop() -> None:
        index = 0
        while not stop.is_set():
            for _ in range(1000):
                check_federation_policy(domains[index % 1000], store=store)
                index += 1

    worker = threading.Thread(target=hot_loop, daemon=True) if busy else None
    if worker is not None:
        worker.start()
    pipe.recv()  # wait for "quit"
    stop.set()
    if worker is not None:
        worker.join()
    listener.join()
    pubsub.close()
    raw.close()
    store.close()


def run(rounds: int, busy: bool, database_url: str) -> dict[str, float]:
    from fedtrack_redis import PolicyStore

    namespace = scratch_namespace()
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(PROCESSES):
        parent, child_end = context.Pipe()
        process = context.Process(target=child, args=(child_end, database_url, namespace, busy))
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    writer = PolicyStore(database_url, REDIS_URL, namespace=namespace).init()
    publisher = redis.Redis.from_url(REDIS_URL)
    samples: list[float] = []
    all_visible: list[float] = []
    raw_samples: list[float] = []
    try:
        for index in range(rounds):
            domain = f"rule{index}.example"
            start = time.perf_counter()
            writer.add_rule(domain)
            stamps = [_wait_for(pipe, domain) for pipe in pipes]
            samples += [(stamp - start) * 1000 for stamp in stamps]
            all_visible.append((max(stamps) - start) * 1000)
            start = time.perf_counter()
            publisher.publish(f"bench-raw:{namespace}", str(index))
            raw_samples += [(_wait_for(pipe, f"raw:{index}") - start) * 1000 for pipe in pipes]
            time.sleep(random.uniform(0.005, 0.015))  # spread the changes like real operators
    finally:
        for pipe in pipes:
            pipe.send("quit")
        for process in processes:
            process.join(30)
        writer.close()
        publisher.close()
        delete_namespace(namespace)
    return {
        "p50_ms": median(samples),
        "p99_ms": percentile(samples, 99),
        "all8_p50_ms": median(all_visible),
        "all8_p99_ms": percentile(all_visible, 99),
        "raw_pubsub_p50_ms": median(raw_samples),
        "raw_pubsub_p99_ms": percentile(raw_samples, 99),
        "samples": len(samples),
    }


def _wait_for(pipe: Connection, label: str) -> float:
    while True:
        if not pipe.poll(10):
            raise TimeoutError(f"no report of {label}")
        name, stamp = pipe.recv()
        if name == label:
            return float(stamp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds, to check it runs")
    args = parser.parse_args()
    rounds = 20 if args.quick else 300
    results = {}
    with scratch_database() as database_url:
        results["idle"] = run(rounds, busy=False, database_url=database_url)
        results["busy"] = run(rounds, busy=True, database_url=database_url)
    print(f"machine: {machine()}; {PROCESSES} processes; {rounds} changes each run")
    for label, target in (("idle", 10.0), ("busy", 25.0)):
        r = results[label]
        print(
            f"{label:5s} add_rule→visible p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
            f" (target ≤ {target} ms: {'pass' if r['p99_ms'] <= target else 'MISS'});"
            f" all 8 visible p50 {r['all8_p50_ms']:.2f} / p99 {r['all8_p99_ms']:.2f} ms;"
            f" raw PUBLISH p50 {r['raw_pubsub_p50_ms']:.2f} / p99 {r['raw_pubsub_p99_ms']:.2f} ms"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
