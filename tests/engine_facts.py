"""Measure the engine launchers and redis-py's behaviour across failovers (not a test).

Run from the repository root: ``.venv/bin/python tests/engine_facts.py [--runs 5]``.
It prints the start-up and failover times quoted in `engines`' docstring, then what
redis-py does when a master dies under it:

1. how long a `redis.cluster.RedisCluster` client takes to write again after its slot's
   master is SIGKILLed, against when the cluster itself agrees on the promotion, and
   what its calls raise in between;
2. whether a Sentinel ``master_for`` client (a `SentinelConnectionPool`) reconnects to
   the new master by itself, with redis-py's default retry and with none;
3. whether ``ClusterPubSub.ssubscribe`` (sharded) and ``subscribe`` (classic) go on
   receiving after a failover of their node, with a client that also publishes and
   with one that only listens;
4. what a write to a demoted old master answers (cluster and Sentinel, killed and
   restarted, or demoted alive by ``SENTINEL FAILOVER``).

What it printed here (redis-py 8.1.0, redis-server 7.0.15, 2 cores):

1. Cluster: every ``set`` while the master is dead raises ``ConnectionError`` (connection
   refused) within 0.08 s: redis-py's 10 retries refresh the slot table each time but
   never back off, and the table still names the dead master until the promotion. The
   same client object writes again 2.27 s after the kill, as soon as the cluster has
   promoted (it agreed at 2.30 s): the first refresh after it finds the new owner.
2. Sentinel: a ``master_for`` pool asks the sentinels again on every new connection, so
   the same client writes again by itself as soon as they name the new master (2.22 s
   after the kill, they agreed at 2.21 s); in between, without a retry, calls raise
   ``ConnectionError`` (refused) and then ``MasterNotFoundError`` (the sentinels flag the
   master down). ``master_for`` connections get no retry unless one is passed (the
   ``Redis()`` default of 10 does not reach them); with ``Retry(ExponentialWithJitter(
   0.01, 1), 10)`` one call rode through the whole failover (3.14 s). Its pubsub raised
   ``ConnectionError`` once, then re-subscribed on the new master by itself.
3. ``ClusterPubSub.ssubscribe`` survives a failover only if its own RedisCluster client
   refreshes its slot table: one that also published got messages 0.01 s after the
   promotion; one that only listens raised ``ConnectionError`` on every
   ``get_sharded_message`` for 8 s and never recovered, unless the caller runs
   ``client.nodes_manager.initialize()`` on that error (then 0.11 s). Classic
   ``subscribe`` stays bound to the dead node for good; a new pubsub object works.
4. A write to the old cluster master back as a replica: ``MovedError`` to the new
   master (a RedisCluster with the old slot table follows it transparently). Sentinel:
   the killed master restarts as an empty master and accepts writes for 10 s until the
   sentinels convert it, then ``ReadOnlyError`` (redis-py's sentinel connection turns
   that into ``ConnectionError("The previous master is now a slave")``). After
   ``SENTINEL FAILOVER`` of a live master, a ``master_for`` client kept its pooled
   connection and wrote to the old master for 11.3 s (the sentinels named the new one
   at 1.25 s) until the conversion's ``CLIENT KILL``: 109 of 142 acknowledged INCRs were
   lost; with ``WAIT 1`` counted 9 of 21 still lost (``WAIT`` counted the other replica,
   not the promoted one); with ``WAIT 2`` (every replica) none of 12.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode
from redis.crc import key_slot
from redis.retry import Retry
from redis.sentinel import Sentinel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines import RedisCluster, RedisSentinelSet, admin_client

POLL = 0.02


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:90]}"


def _summary(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples):.2f} s"
        f" [{min(samples):.2f}-{max(samples):.2f}] over {len(samples)}"
    )


class Attempts:
    """Calls of one operation in a loop: the errors seen, the longest call, the first
    success after the fault."""

    def __init__(self, name: str, start: float) -> None:
        self.name = name
        self.start = start
        self.errors: Counter[str] = Counter()
        self.longest = 0.0
        self.first_ok: float | None = None

    def attempt(self, operation: Callable[[], Any]) -> bool:
        began = time.monotonic()
        try:
            operation()
        except redis.RedisError as exc:
            self.errors[_error(exc)] += 1
            return False
        finally:
            self.longest = max(self.longest, time.monotonic() - began)
        if self.first_ok is None:
            self.first_ok = time.monotonic() - self.start
        return True

    def report(self) -> str:
        ok = "never" if self.first_ok is None else f"{self.first_ok:.2f} s"
        lines = [f"  {self.name}: first success {ok} after the fault; longest call"]
        lines[0] += f" {self.longest:.2f} s"
        lines += [f"    {count} x {error}" for error, count in self.errors.most_common()]
        return "\n".join(lines)


def _in_background(function: Callable[[], Any], start: float) -> dict[str, Any]:
    """Run `function` in a thread; the dict gets ``value`` and ``at`` (s after start)."""
    result: dict[str, Any] = {}

    def run() -> None:
        result["value"] = function()
        result["at"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    result["thread"] = thread
    return result


def _until_ok(attempts: Attempts, operation: Callable[[], Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not attempts.attempt(operation):
        time.sleep(POLL)


# -- timings ---------------------------------------------------------------------------


def timings(runs: int) -> None:
    starts, promotions, rejoins = [], [], []
    for _ in range(runs):
        began = time.monotonic()
        with RedisCluster() as cluster:
            starts.append(time.monotonic() - began)
            killed_at = time.monotonic()
            old = cluster.kill_master_for_key("timing")
            cluster.wait_promoted(key_slot(b"timing"), 20)
            promotions.append(time.monotonic() - killed_at)
            restarted_at = time.monotonic()
            cluster.restart_node(old)
            cluster.wait_replica(old, 30)
            rejoins.append(time.monotonic() - restarted_at)
    print(f"cluster start:      {_summary(starts)}")
    print(f"cluster promotion:  {_summary(promotions)}")
    print(f"cluster rejoin:     {_summary(rejoins)}")
    starts, failovers, rejoins = [], [], []
    for _ in range(runs):
        began = time.monotonic()
        with RedisSentinelSet() as sentinels:
            starts.append(time.monotonic() - began)
            killed_at = time.monotonic()
            old = sentinels.kill_master()
            sentinels.wait_failover(old, 30)
            failovers.append(time.monotonic() - killed_at)
            restarted_at = time.monotonic()
            sentinels.restart(old)
            sentinels.wait_replica(old, 60)
            rejoins.append(time.monotonic() - restarted_at)
    print(f"sentinel start:     {_summary(starts)}")
    print(f"sentinel failover:  {_summary(failovers)}")
    print(f"sentinel rejoin:    {_summary(rejoins)}")


# -- cluster ---------------------------------------------------------------------------


def _drain(get: Callable[[], Any], until: float) -> list[Any]:
    """Messages (data only) got from `get` until the monotonic deadline `until`."""
    got = []
    while time.monotonic() < until:
        message = get()
        if message and message["type"] in ("message", "smessage"):
            got.append(message["data"])
    return got


def cluster_facts() -> None:
    print("\n== Redis Cluster (redis-py RedisCluster, default options)")
    with RedisCluster() as cluster:
        seeds = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
        client = redis.cluster.RedisCluster(startup_nodes=seeds, decode_responses=True)
        stale = redis.cluster.RedisCluster(startup_nodes=seeds, decode_responses=True)
        listener = redis.cluster.RedisCluster(startup_nodes=seeds, decode_responses=True)
        healer = redis.cluster.RedisCluster(startup_nodes=seeds, decode_responses=True)
        key, sharded_channel, classic_channel = "{facts}:k", "{facts}:s", "{facts}:c"
        slot = key_slot(key.encode())
        client.set(key, "before")
        stale.set(key, "before")  # `stale` knows the slot table of before the kill
        sharded = client.pubsub()
        sharded.ssubscribe(sharded_channel)
        idle_sharded = listener.pubsub()  # its client sends nothing but this pubsub
        idle_sharded.ssubscribe(sharded_channel)
        healed_sharded = healer.pubsub()  # idle too, but refreshes the slot table on error
        healed_sharded.ssubscribe(sharded_channel)
        classic = client.pubsub()
        classic.subscribe(classic_channel)
        for pubsub in (sharded, idle_sharded, healed_sharded):
            _drain(lambda p=pubsub: p.get_sharded_message(timeout=0.05), time.monotonic() + 0.2)
        _drain(lambda: classic.get_message(timeout=0.05), time.monotonic() + 0.2)
        print(
            f"  classic pubsub bound to node {classic.get_pubsub_node().port},"
            f" master of {key!r}: {cluster.master_for_key(key)}"
        )

        start = time.monotonic()
        old = cluster.kill_master_for_key(key)
        promoted = _in_background(lambda: cluster.wait_promoted(slot, 30), start)
        writes = Attempts("client.set(key) in a loop", start)
        _until_ok(writes, lambda: client.set(key, "after"))
        promoted["thread"].join()
        print(
            f"  killed master {old}; the cluster agrees on {promoted['value']}"
            f" at {promoted['at']:.2f} s"
        )
        print(writes.report())

        # 3. pub/sub after the failover: publish a numbered message every 0.1 s for 8 s.
        received: dict[str, float | None] = dict.fromkeys(
            ["sharded", "idle sharded", "idle sharded + initialize()", "classic"]
        )
        errors: dict[str, Counter[str]] = {name: Counter() for name in received}
        getters: dict[str, Callable[[], Any]] = {
            "sharded": lambda: sharded.get_sharded_message(timeout=0.01),
            "idle sharded": lambda: idle_sharded.get_sharded_message(timeout=0.01),
            "idle sharded + initialize()": lambda: healed_sharded.get_sharded_message(timeout=0.01),
            "classic": lambda: classic.get_message(timeout=0.01),
        }
        published_from = time.monotonic()
        next_publish = 0.0
        while time.monotonic() < published_from + 8:
            if time.monotonic() >= next_publish:
                next_publish = time.monotonic() + 0.1
                for publish in (
                    lambda: client.spublish(sharded_channel, "m"),
                    lambda: client.publish(classic_channel, "m"),
                ):
                    try:
                        publish()
                    except redis.RedisError as exc:
                        errors["sharded"][f"publish {_error(exc)}"] += 1
            for name, get in getters.items():
                try:
                    message = get()
                except redis.RedisError as exc:
                    errors[name][_error(exc)] += 1
                    if name == "idle sharded + initialize()":
                        healer.nodes_manager.initialize()  # fires the pubsub's reconcile
                    continue
                if message and message["type"] in ("message", "smessage") and not received[name]:
                    received[name] = time.monotonic() - published_from
        for name, at in received.items():
            status = "never (8 s)" if at is None else f"{at:.2f} s after the promotion"
            print(f"  {name} pubsub: first message {status}")
            for error, count in errors[name].most_common():
                print(f"    {count} x {error}")
        fresh = client.pubsub()
        fresh.subscribe(classic_channel)
        _drain(lambda: fresh.get_message(timeout=0.05), time.monotonic() + 0.2)
        client.publish(classic_channel, "m")
        got = _drain(lambda: fresh.get_message(timeout=0.05), time.monotonic() + 0.5)
        print(f"  a fresh classic pubsub, bound to {fresh.get_pubsub_node().port}: got {got}")

        # 4. the old master comes back.
        cluster.restart_node(old)
        direct = admin_client(old)
        try:
            direct.set(key, "direct")
            print("  direct SET on the restarted old master, at once: accepted")
        except redis.RedisError as exc:
            print(f"  direct SET on the restarted old master, at once: {_error(exc)}")
        master = cluster.wait_replica(old, 30)
        try:
            direct.set(key, "direct")
            print("  direct SET on the old master, now a replica: accepted")
        except redis.RedisError as exc:
            print(f"  direct SET on the old master, now a replica of {master}: {_error(exc)}")
        before = time.monotonic()
        stale.set(key, "stale")
        print(
            f"  RedisCluster with the old slot table: SET ok in {time.monotonic() - before:.3f} s,"
            f" value on the new master {admin_client(master).get(key)!r}"
        )
        for closable in (sharded, idle_sharded, healed_sharded, classic, fresh, direct):
            closable.close()
        for cluster_client in (client, stale, listener, healer):
            cluster_client.close()


# -- sentinel --------------------------------------------------------------------------


def _serving_port(client: redis.Redis) -> int:
    return int(client.info("server")["tcp_port"])


def sentinel_facts() -> None:
    print("\n== Sentinel (redis-py Sentinel.master_for)")
    with RedisSentinelSet() as sentinels:
        sentinel = Sentinel(sentinels.sentinel_addresses, socket_timeout=0.5)
        # master_for's pool builds its connections without Redis()'s default retry:
        # unless one is passed, they get Retry(NoBackoff(), 0).
        default = sentinel.master_for(sentinels.service, socket_timeout=0.5)
        backoff = Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), 10)
        retrying = sentinel.master_for(sentinels.service, socket_timeout=0.5, retry=backoff)
        default.set("k", "before")
        retrying.set("k", "before")
        pubsub = default.pubsub()
        pubsub.subscribe("c")
        _drain(lambda: pubsub.get_message(timeout=0.05), time.monotonic() + 0.2)

        start = time.monotonic()
        old = sentinels.kill_master()
        elected = _in_background(lambda: sentinels.wait_failover(old, 30), start)
        with_default = Attempts("master_for client, no retry passed", start)
        without = Attempts(
            "master_for client, retry=Retry(ExponentialWithJitter(0.01, 1), 10)", start
        )
        loops = [
            _in_background(
                lambda: _until_ok(with_default, lambda: default.set("k", "after")), start
            ),
            _in_background(lambda: _until_ok(without, lambda: retrying.set("k", "after")), start),
        ]
        for loop in [*loops, elected]:
            loop["thread"].join()
        new = elected["value"]
        print(f"  killed master {old}; sentinels agree on {new} at {elected['at']:.2f} s")
        print(with_default.report())
        print(without.report())
        print(f"  both clients now write to port {_serving_port(default)}")
        pubsub_errors: Counter[str] = Counter()
        got_at = None
        began = time.monotonic()
        while time.monotonic() < began + 5 and got_at is None:
            default.publish("c", "m")
            try:
                message = pubsub.get_message(timeout=0.1)
            except redis.RedisError as exc:
                pubsub_errors[_error(exc)] += 1
                continue
            if message and message["type"] == "message":
                got_at = time.monotonic() - began
        status = "never (5 s)" if got_at is None else f"{got_at:.2f} s after the failover"
        print(f"  pubsub of the master_for client: first message {status} {dict(pubsub_errors)}")

        # 4a. the killed master comes back, empty and claiming to be master.
        sentinels.restart(old)
        direct = admin_client(old)
        try:
            direct.set("k", "direct")
            print("  direct SET on the restarted old master, at once: accepted (it is a master)")
        except redis.RedisError as exc:
            print(f"  direct SET on the restarted old master, at once: {_error(exc)}")
        restarted = time.monotonic()
        sentinels.wait_replica(old, 60)
        print(f"  the sentinels made it a replica {time.monotonic() - restarted:.2f} s later")
        try:
            direct.set("k", "direct")
            print("  direct SET on the old master, now a replica: accepted")
        except redis.RedisError as exc:
            print(f"  direct SET on the old master, now a replica: {_error(exc)}")

        for closable in (pubsub, default, retrying, direct):
            closable.close()
        sentinel.close()


def sentinel_manual_failover_facts() -> None:
    """4b. A master demoted while alive (``SENTINEL FAILOVER``), on a fresh set: which
    server does each acknowledged INCR reach, would ``WAIT 1`` have counted it, and
    what is kept on the new master?"""
    print("\n== Sentinel: SENTINEL FAILOVER while the master is alive")
    with RedisSentinelSet() as sentinels:
        sentinel = Sentinel(sentinels.sentinel_addresses, socket_timeout=0.5)
        client = sentinel.master_for(sentinels.service, socket_timeout=0.5)
        old = sentinels.master_port()
        client.set("n", 0)
        reply = admin_client(sentinels.sentinels[0].port).execute_command(
            "SENTINEL", "FAILOVER", sentinels.service
        )
        start = time.monotonic()
        attempts = Attempts("master_for client: INCR, WAIT 2 50, INFO server", start)
        timeline: list[str] = []
        #: (port, INCR's reply, replicas WAIT counted) of each acknowledged INCR
        acks: list[tuple[int, int, int]] = []
        last: tuple[object, ...] = ()
        while time.monotonic() < start + 20:

            def incr() -> None:
                with client.pipeline(transaction=False) as pipe:
                    pipe.incr("n")
                    pipe.execute_command("WAIT", 2, 50)
                    pipe.info("server")
                    value, replicas, info = pipe.execute()
                acks.append((int(info["tcp_port"]), int(value), int(replicas)))

            port: object = acks[-1][0] if attempts.attempt(incr) else "error"
            named = sentinels.master_port()
            state = (port, named, *(sentinels.role(p) for p in sentinels.servers))
            if state != last:
                roles = ", ".join(f"{p} {sentinels.role(p)}" for p in sentinels.servers)
                timeline.append(
                    f"    {time.monotonic() - start:5.2f} s: INCR reaches {port},"
                    f" sentinels name {named}; {roles}"
                )
                last = state
            if sum(1 for a in acks if a[0] != old) > 20:
                break
            time.sleep(POLL)
        new = sentinels.master_port()
        kept = int(admin_client(new).get("n") or 0)
        on_new = sum(1 for a in acks if a[0] == new)
        # The new master counts on from the value it had when promoted: the old
        # master's INCRs above that value are gone.
        promoted_at = kept - on_new
        on_old = [a for a in acks if a[0] == old]
        print(f"  SENTINEL FAILOVER answered {reply!r}; old master {old}, new {new}")
        print(attempts.report())
        print("\n".join(timeline))
        print(f"    {len(on_old)} INCRs acknowledged by the old master, {on_new} by the new;")
        print(f"    {kept} kept: {sum(1 for a in on_old if a[1] > promoted_at)} acknowledged lost")
        for need in (1, 2):
            counted = [a for a in on_old if a[2] >= need]
            lost = sum(1 for a in counted if a[1] > promoted_at)
            print(
                f"    with WAIT {need} >= {need}: {len(counted)} acknowledged, {lost} of them lost"
            )
        client.close()
        sentinel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each timing")
    parser.add_argument("--skip-timings", action="store_true")
    options = parser.parse_args()
    print(f"redis-py {redis.__version__}")
    if not options.skip_timings:
        timings(options.runs)
    cluster_facts()
    sentinel_facts()
    sentinel_manual_failover_facts()


if __name__ == "__main__":
    main()
