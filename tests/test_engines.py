"""The throwaway Redis Cluster and Sentinel launchers (`engines`) and the engine fixtures.

These use redis-py directly: the library's own URL factory is tested elsewhere.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient
from redis.crc import key_slot
from redis.exceptions import ClusterDownError
from redis.sentinel import Sentinel

import engines
from engines import SLOTS, RedisCluster, RedisSentinelSet, admin_client, redis_py_client
from servers import wait_for

#: What a client may raise while its master is down and until it finds the new one.
FAILOVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterDownError)


def retry_until(operation: Callable[[], Any], timeout: float, message: str) -> Any:
    """Call `operation` until it stops raising `FAILOVER_ERRORS`; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation()
        except FAILOVER_ERRORS as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {message}") from exc
            time.sleep(0.05)


def cluster_client(cluster: RedisCluster) -> RedisClusterClient:
    seeds = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    return RedisClusterClient(startup_nodes=seeds, decode_responses=True)


def key_on(cluster: RedisCluster, master: int) -> str:
    """A key whose slot the master on port `master` owns."""
    for n in range(10_000):
        key = f"engines:{{{n}}}"
        if cluster.master_for_key(key) == master:
            return key
    raise AssertionError(f"no key found for master {master}")


# -- cluster -------------------------------------------------------------------------------


def test_cluster_covers_every_slot_with_three_masters_of_one_replica_each(
    redis_cluster: RedisCluster,
) -> None:
    views = {port: redis_cluster.slot_ranges(port) for port in redis_cluster.live_ports}
    assert len(views) == 6
    first = next(iter(views.values()))
    assert first is not None
    assert all(view == first for view in views.values()), "every node sees the same slots"
    covered = sorted((start, end) for start, end, _, _ in first)
    assert covered[0][0] == 0 and covered[-1][1] == SLOTS - 1
    assert all(a_end + 1 == b_start for (_, a_end), (b_start, _) in itertools.pairwise(covered))
    assert sum(end - start + 1 for start, end in covered) == SLOTS
    masters = {master for _, _, master, _ in first}
    assert len(masters) == 3
    assert set(redis_cluster.seeds) == masters

    topology = redis_cluster.topology(redis_cluster.seeds[0])
    assert topology is not None
    assert set(topology) == masters
    replicas = [replica for of in topology.values() for replica in of]
    assert all(len(of) == 1 for of in topology.values()), topology
    assert set(replicas) | masters == set(redis_cluster.nodes)
    for replica in replicas:
        assert redis_cluster.role(replica) == "slave"
        info = admin_client(replica).info("replication")
        assert info["master_link_status"] == "up"
        assert info["master_port"] in topology and replica in topology[info["master_port"]]
    assert redis_cluster.is_healthy()


def test_cluster_url_names_the_seed_masters(redis_cluster: RedisCluster) -> None:
    ports = redis_cluster.seeds
    assert redis_cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    assert redis_cluster.startup_nodes == [("127.0.0.1", port) for port in ports]


def test_cluster_key_written_through_redis_cluster_is_readable(
    redis_cluster: RedisCluster,
) -> None:
    client = cluster_client(redis_cluster)
    try:
        for master in redis_cluster.seeds:
            key = key_on(redis_cluster, master) + uuid.uuid4().hex
            slot = key_slot(key.encode())
            assert redis_cluster.master_for_slot(slot) == master
            client.set(key, "value", ex=60)
            assert client.get(key) == "value"
            with admin_client(master) as owner:
                assert owner.get(key) == "value", "the key lives on its slot's master"
            client.delete(key)
    finally:
        client.close()


@pytest.mark.slow
def test_cluster_promotes_a_replica_and_a_client_writes_again(
    throwaway_cluster: RedisCluster,
) -> None:
    cluster = throwaway_cluster
    client = cluster_client(cluster)
    try:
        key = "engines:{failover}"
        slot = key_slot(key.encode())
        client.set(key, "before")
        old = cluster.master_for_key(key)
        topology = cluster.topology(old)
        assert topology is not None
        (replica,) = topology[old]

        killed_at = time.monotonic()
        assert cluster.kill_master_for_key(key) == old
        assert old not in cluster.pids() and old in cluster.killed
        new = cluster.wait_promoted(slot, timeout=10)
        assert time.monotonic() - killed_at < 10
        assert new == replica, "the dead master's own replica took its slots"
        assert cluster.role(new) == "master"
        assert cluster.master_for_slot(slot) == new

        # The same client object recovers by itself once the cluster has.
        retry_until(lambda: client.set(key, "after"), 10, "a write through RedisCluster")
        assert client.get(key) == "after"
        with admin_client(new) as owner:
            assert owner.get(key) == "after"

        cluster.restart_node(old)
        assert cluster.wait_replica(old, timeout=15) == new
        with admin_client(old) as rejoined:
            assert rejoined.execute_command("ROLE")[0] == "slave"
        assert cluster.is_healthy()
    finally:
        client.close()


# -- sentinel ------------------------------------------------------------------------------


def test_sentinel_master_accepts_writes_and_replicas_are_in_sync(
    redis_sentinel: RedisSentinelSet,
) -> None:
    sentinels = redis_sentinel
    hosts = ",".join(f"127.0.0.1:{port}" for _, port in sentinels.sentinel_addresses)
    assert sentinels.url == f"redis+sentinel://{hosts}/fedtrack"
    sentinel = Sentinel(sentinels.sentinel_addresses, socket_timeout=1)
    master = sentinel.master_for("fedtrack", socket_timeout=1, decode_responses=True)
    try:
        assert sentinel.discover_master("fedtrack") == ("127.0.0.1", sentinels.master_port())
        assert int(master.info("server")["tcp_port"]) == sentinels.master_port()
        assert master.execute_command("ROLE")[0] == "master"
        key = "engines:sentinel:" + uuid.uuid4().hex
        master.set(key, "value", ex=60)
        assert master.execute_command("WAIT", 2, 1000) == 2
        replicas = [port for port in sentinels.servers if port != sentinels.master_port()]
        assert len(replicas) == 2
        for port in replicas:
            assert sentinels.role(port) == "slave"
            with admin_client(port) as replica:
                assert replica.get(key) == "value"
        assert sorted(port for _, port in sentinel.discover_slaves("fedtrack")) == sorted(replicas)
        master.delete(key)
    finally:
        master.close()
        sentinel.close()


@pytest.mark.slow
def test_sentinel_elects_a_new_master_and_the_old_one_comes_back_as_a_replica(
    throwaway_sentinel: RedisSentinelSet,
) -> None:
    sentinels = throwaway_sentinel
    sentinel = Sentinel(sentinels.sentinel_addresses, socket_timeout=1)
    master = sentinel.master_for("fedtrack", socket_timeout=1, decode_responses=True)
    try:
        master.set("engines:kept", "before")
        assert master.execute_command("WAIT", 2, 1000) == 2

        killed_at = time.monotonic()
        old = sentinels.kill_master()
        new = sentinels.wait_failover(old, timeout=10)
        assert time.monotonic() - killed_at < 10
        assert new != old and new in sentinels.servers
        assert sentinels.master_port() == new

        # The same master_for client finds the new master by itself.
        retry_until(lambda: master.set("engines:after", "x"), 10, "a write through master_for")
        assert int(master.info("server")["tcp_port"]) == new
        assert master.get("engines:kept") == "before", "a write both replicas had survives"

        sentinels.restart(old)
        # a replica of the master the sentinels name (they may have failed over again
        # meanwhile on a busy host)
        assert sentinels.wait_replica(old, timeout=30) in sentinels.servers
        with admin_client(old) as demoted:
            assert demoted.execute_command("ROLE")[0] == "slave"
            with pytest.raises(redis.ReadOnlyError):
                demoted.set("engines:demoted", "x")
    finally:
        master.close()
        sentinel.close()


# -- both ----------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_launchers_leave_no_process_behind(
    throwaway_cluster: RedisCluster, throwaway_sentinel: RedisSentinelSet
) -> None:
    cluster, sentinels = throwaway_cluster, throwaway_sentinel
    # A killed and restarted node: its two processes are both accounted for.
    replica = next(port for port in cluster.nodes if cluster.role(port) == "slave")
    cluster.kill_node(replica)
    cluster.restart_node(replica)
    assert len(cluster.all_pids) == 7 and len(cluster.pids()) == 6
    assert len(sentinels.all_pids) == 6 and len(sentinels.pids()) == 6
    directories = [server.dir for server in [*cluster.processes, *sentinels.processes]]
    pids = cluster.all_pids + sentinels.all_pids
    assert not all(_gone(pid) for pid in pids)

    for launcher in (cluster, sentinels):
        assert launcher in engines._OPEN
        launcher.close()
        launcher.close()  # idempotent: the fixture closes it again
        assert launcher not in engines._OPEN
        assert launcher.pids() == []
    wait_for(lambda: all(_gone(pid) for pid in pids), 5, "every process gone")
    assert not any(Path(directory).exists() for directory in directories)


def test_a_failed_start_kills_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "_which", lambda name: "false")  # redis-cli fails
    cluster = RedisCluster()
    with pytest.raises(RuntimeError, match="cluster create failed"):
        cluster.start()
    assert len(cluster.all_pids) == 6
    assert all(_gone(pid) for pid in cluster.all_pids)
    assert cluster not in engines._OPEN


def test_a_launcher_left_open_is_closed_at_interpreter_exit() -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import engines;"
        " print(engines.RedisSentinelSet().start().all_pids)"  # never closed
    )
    tests = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", script, tests],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pids: list[int] = json.loads(result.stdout)
    try:
        assert len(pids) == 6
        wait_for(lambda: all(_gone(pid) for pid in pids), 5, "the atexit hook killed them")
    finally:
        for pid in pids:  # had the hook failed: those orphans are ours, by their ids
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- the engine_url fixture ----------------------------------------------------------------


def test_engine_url_reaches_a_writable_master(
    engine_url: str, namespace: str, request: pytest.FixtureRequest
) -> None:
    engine = request.node.callspec.params["engine_url"]
    expected_scheme = {"single": "redis://", "sentinel": "redis+sentinel://"}
    assert engine_url.startswith(expected_scheme.get(engine, "redis+cluster://"))
    marked = request.node.get_closest_marker("engines") is not None
    assert marked == (engine != "single")
    key = f"fedtrack:{{{namespace}:engines}}"
    with redis_py_client(engine_url, decode_responses=True) as client:
        client.set(key, engine, ex=60)
        assert client.get(key) == engine
        client.delete(key)
