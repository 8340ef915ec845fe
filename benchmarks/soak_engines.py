"""The soak's throwaway servers: a Redis Sentinel set and a PostgreSQL cluster, and the
operator actions on them that the fault schedule needs.

The launchers are the test suite's (``tests/servers.py``, ``tests/engines.py``), imported
through ``sys.path`` so that both keep one implementation; this module only adds the
drills: restart a node as a replica of the current master, restart every data node empty
(with the roles the sentinels expect), and kill the pub/sub connections of every node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import redis

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from engines import RedisSentinelSet, admin_client  # noqa: E402
from servers import PostgresServer, wait_for  # noqa: E402

__all__ = [
    "PostgresServer",
    "RedisSentinelSet",
    "admin_client",
    "create_database",
    "kill_pubsub_connections",
    "restart_all_empty",
    "restart_as_replica",
    "sentinel_url",
    "wait_for",
    "wait_healthy",
]

SYNC_ARGS = ["--repl-diskless-sync-delay", "0"]


def sentinel_url(sentinels: RedisSentinelSet, wait_replicas: int) -> str:
    """``redis+sentinel://…/SERVICE?wait_replicas=N`` (G10: N = every replica)."""
    return f"{sentinels.url}?wait_replicas={wait_replicas}"


def create_database(server: PostgresServer, name: str) -> str:
    """Create database `name` on `server`; return its SQLAlchemy URL."""
    with psycopg.connect(
        host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


def replicas_online(master: int, expected: int) -> bool:
    """The master lists `expected` replicas, each online with a lag of at most 1 s (the
    launcher's own test wants equal offsets, which a set under load never shows)."""
    client = admin_client(master, timeout=2.0)
    try:
        info = client.info("replication")
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()
    if info.get("role") != "master":
        return False
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return len(replicas) == expected and all(
        r.get("state") == "online" and int(r.get("lag", 99)) <= 1 for r in replicas
    )


def healthy(sentinels: RedisSentinelSet) -> int:
    """The master's port when a majority of sentinels names it, it has every replica
    online and every sentinel sees the whole set; else 0."""
    try:
        master = sentinels.master_port()
    except RuntimeError:
        return 0
    if not replicas_online(master, len(sentinels.servers) - 1):
        return 0
    return master if sentinels.sentinels_ready() else 0


def wait_healthy(sentinels: RedisSentinelSet, timeout: float = 30.0) -> int:
    """Wait until the set is `healthy`; returns the master's port."""
    return wait_for(lambda: healthy(sentinels), timeout, "the Sentinel set is healthy", 0.05)


def restart_as_replica(sentinels: RedisSentinelSet, port: int, master: int) -> None:
    """Start the killed data node on `port` again (empty), as a replica of `master`, the
    way an operator brings a failed master back after a failover."""
    server = sentinels.servers[port]
    server.extra_args = [*SYNC_ARGS, "--replicaof", "127.0.0.1", str(master)]
    sentinels.restart(port)


def restart_all_empty(sentinels: RedisSentinelSet) -> int:
    """SIGKILL every data node and start them again with no data: the master first (as
    master), then the replicas of it. Quick enough (well under the sentinels'
    ``down-after-milliseconds``) that no failover starts. Returns the master's port."""
    master = sentinels.master_port()
    for port in sentinels.servers:
        sentinels.kill(port)
    sentinels.servers[master].extra_args = list(SYNC_ARGS)
    sentinels.restart(master)
    for port in sentinels.servers:
        if port != master:
            restart_as_replica(sentinels, port, master)
    return master


def kill_pubsub_connections(sentinels: RedisSentinelSet) -> int:
    """``CLIENT KILL TYPE pubsub`` on every data node; returns how many were killed."""
    killed = 0
    for port in sentinels.servers:
        client = admin_client(port, timeout=2.0)
        try:
            reply = client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
            killed += int(reply)
        finally:
            client.close()
    return killed
