"""One simulated frontend worker: realistic, skewed federation traffic through the library.

Domains follow a Zipf-like popularity; each has its own failure rate (a few are badly
broken) and latency profile; transports are mostly HTTPS, some HTTP and SMTP. Every
message is first checked against the federation policy, like a real relay does, and an
outbound one is only attempted when `should_attempt` says so (delivery health). One
domain, `FLAPPING`, goes down for `DOWN_SECONDS` of every `CYCLE_SECONDS` (by the wall
clock, so every worker agrees), so the dashboard shows the whole cycle: backoff,
unavailable, one probe at a time, healthy again once it answers.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event

from ..check import check_federation_policy
from ..health.policy import HealthPolicy
from ..policy.store import PolicyStore
from ..tracker import FederationTracker

TRANSPORTS = ("HTTPS", "HTTPS", "HTTPS", "HTTPS", "HTTPS", "HTTPS", "HTTPS", "HTTP", "SMTP", "SMTP")
WORDS = ("relay", "chat", "mx", "post", "mail", "nine", "delta", "moss", "quill", "harbor")
TLDS = ("example", "test", "invalid", "example.org", "example.net")
#: The domain that goes down and comes back.
FLAPPING = "flapping.example.net"
CYCLE_SECONDS = 180.0
DOWN_SECONDS = 100.0
#: Minutes instead of hours and days, so a demo shows every state (docs/health.md).
DEMO_HEALTH = HealthPolicy(
    failures=3, backoff_min=4.0, backoff_max=20.0, unavailable_after=3, period=20.0
)


@dataclass(frozen=True)
class RemoteDomain:
    name: str
    weight: float
    failure_rate: float
    median_latency_ms: float


def population(count: int, seed: int = 7) -> list[RemoteDomain]:
    """The same `count` remote domains in every worker (same seed)."""
    rng = random.Random(seed)
    domains = []
    for rank in range(1, count + 1):
        name = f"{rng.choice(WORDS)}{rank}.{rng.choice(TLDS)}"
        broken = rng.random() < 0.04
        failure = rng.uniform(0.35, 0.9) if broken else rng.betavariate(1.2, 40)
        latency = rng.lognormvariate(math.log(180), 0.6) * (6 if rng.random() < 0.03 else 1)
        domains.append(RemoteDomain(name, 1 / rank**1.1, failure, latency))
    domains.append(RemoteDomain(FLAPPING, 1 / 8, 0.02, 150.0))
    return domains


def is_down(name: str, now: float | None = None) -> bool:
    """Whether `name` refuses deliveries right now (only `FLAPPING`, part of each cycle)."""
    moment = time.time() if now is None else now
    return name == FLAPPING and moment % CYCLE_SECONDS < DOWN_SECONDS


def run_worker(
    redis_url: str,
    database_url: str,
    namespace: str,
    stop: Event,
    *,
    seed: int,
    rate: float = 1500.0,
    domains: int = 400,
    local_domain: str = "mail.example",
) -> None:
    """Record about `rate` events a second until `stop` is set, then close cleanly."""
    rng = random.Random(seed)
    remote = population(domains)
    weights = [d.weight for d in remote]
    store = PolicyStore(database_url, redis_url, namespace=namespace).init()
    tracker = FederationTracker(
        redis_url, namespace=namespace, push_interval=0.5, health=DEMO_HEALTH
    )
    in_flight: list[str] = []
    try:
        next_tick = time.monotonic()
        while not stop.is_set():
            batch = max(1, int(rate / 50))
            for domain in rng.choices(remote, weights, k=batch):
                simulate_message(rng, domain, store, tracker, in_flight, local_domain)
            next_tick += batch / rate
            delay = next_tick - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_tick = time.monotonic()
    finally:
        for name in in_flight:
            tracker.decrement_queue(name)
        tracker.close()
        store.close()


def simulate_message(
    rng: random.Random,
    domain: RemoteDomain,
    store: PolicyStore,
    tracker: FederationTracker,
    in_flight: list[str],
    local_domain: str,
) -> None:
    """One message to or from `domain`, as a relay would record it."""
    if not check_federation_policy(domain.name, local_domain=local_domain, store=store):
        return
    if rng.random() < 0.3:  # inbound: a delivery received from the domain
        tracker.record_success(domain.name, rng.expovariate(1 / 40))
        return
    if not tracker.should_attempt(domain.name):
        return  # held back cluster-wide: the relay keeps the message for later
    tracker.increment_queue(domain.name)
    in_flight.append(domain.name)
    if len(in_flight) > 40 or rng.random() < 0.9:
        finished = in_flight.pop(rng.randrange(len(in_flight)))
        tracker.decrement_queue(finished)
    transport = rng.choice(TRANSPORTS)
    if is_down(domain.name) or rng.random() < domain.failure_rate:
        # now and then a bad recipient: an SMTP 5xx, which says nothing of the domain
        permanent = transport == "SMTP" and not is_down(domain.name) and rng.random() < 0.2
        tracker.record_failure(domain.name, transport, permanent=permanent)
    else:
        latency = rng.lognormvariate(math.log(domain.median_latency_ms), 0.5)
        tracker.record_success(domain.name, latency, transport)


def main() -> None:
    """``python -m fedtrack_redis.demo.traffic [WORKERS]``: simulated workers configured from
    the ``FEDTRACK_*`` environment, until SIGTERM or Ctrl-C (used by docker-compose.yml)."""
    import multiprocessing
    import signal
    import sys

    from ..config import Settings

    settings = Settings.from_env()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    processes = [
        context.Process(
            target=run_worker,
            args=(settings.redis_url, settings.database_url, settings.namespace, stop),
            kwargs={"seed": index, "local_domain": settings.local_domain or "mail.example"},
        )
        for index in range(count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()


if __name__ == "__main__":
    main()
