"""Throwaway Redis Cluster and Redis Sentinel deployments on loopback, for the engine matrix.

Built from `servers.RedisServer` (one temporary directory per process, no persistence,
free ports); every process a launcher starts stays listed in it, and `close()` kills
them all, also when start-up fails half-way; an ``atexit`` hook closes any launcher a
test left open.

- `RedisCluster`: 3 masters + 3 replicas (``cluster-node-timeout 1000``), created with
  ``redis-cli --cluster create``; its URL is ``redis+cluster://seed,seed,seed``.
- `RedisSentinelSet`: 1 master + 2 replicas watched by 3 sentinels (quorum 2,
  ``down-after-milliseconds 1000``, ``failover-timeout 5000``); its URL is
  ``redis+sentinel://sentinel,sentinel,sentinel/SERVICE``.

Measured on this 2-core machine (redis-server 7.0.15, ``python tests/engine_facts.py``,
medians of 5 runs, min-max in brackets):

- cluster start-up, until every node says ``cluster_state:ok`` and every replica's link
  is up: 2.09 s [2.06-2.12]: ``redis-cli --cluster create`` takes 1.1 s, and a master
  says ``cluster_state:ok`` no sooner than 2 s after it started (Redis's own
  ``CLUSTER_WRITABLE_DELAY``), so this is about as fast as a cluster can start;
- cluster promotion, SIGKILL of a master until the whole cluster agrees on its replica
  as the new owner and is ``ok`` again: 2.31 s [2.20-2.60] (node timeout 1 s, then
  the replica's election delay of 0.5-1 s);
- a killed cluster node restarted on its ``nodes.conf``, until it is a replica with its
  link up: 0.03 s [0.02-0.05];
- sentinel start-up, until every sentinel knows the master, both replicas and the two
  other sentinels, each link up: 1.32 s [1.25-1.34]. Their config files name each
  other (``known-sentinel``, ``known-replica``, as a sentinel writes them itself); left
  to find each other by their hello messages (every 2 s) they took 2.2 s, and waiting
  only for them to be listed, not connected, made the first failover 0.9 s slower;
- sentinel failover, SIGKILL of the master until every sentinel names a new master that
  answers ``ROLE`` as master: 2.26 s [2.25-2.34];
- the killed master restarted (empty, as a master) until the sentinels have turned it
  into a replica of the new one: 10.1 s [10.1-11.1] (the sentinels wait 8 s,
  4 hello periods, before they reconfigure an instance that claims to be a master).
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient
from redis.crc import key_slot
from redis.retry import Retry
from redis.sentinel import Sentinel

from servers import RedisServer, free_port, redis_server_binary, wait_for

SLOTS = 16384
DEFAULT_SERVICE = "fedtrack"

#: Launchers started and not yet closed; closed at interpreter exit as a safety net.
_OPEN: set[_Launcher] = set()


@atexit.register
def _close_leftovers() -> None:
    for launcher in list(_OPEN):
        launcher.close()


def free_ports(count: int, taken: Sequence[int] = ()) -> list[int]:
    """`count` distinct free loopback ports, none of them in `taken`."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


def admin_client(port: int, timeout: float = 0.5) -> redis.Redis:
    """A client for polling one server: short timeouts and no retries, so a dead server
    costs one refused connection, not redis-py's default ten retries with backoff."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class _Admin:
    """One polling client per port, closed with the launcher."""

    def __init__(self) -> None:
        self._clients: dict[int, redis.Redis] = {}

    def __call__(self, port: int) -> redis.Redis:
        client = self._clients.get(port)
        if client is None:
            client = self._clients[port] = admin_client(port)
        return client

    def ask(self, port: int, *args: Any) -> Any:
        """The reply of the server on `port`, or None when it does not answer."""
        try:
            return self(port).execute_command(*args)  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError):
            self(port).connection_pool.disconnect()
            return None

    def info(self, port: int, section: str) -> dict[str, Any] | None:
        try:
            return dict(self(port).info(section))
        except (redis.ConnectionError, redis.TimeoutError):
            self(port).connection_pool.disconnect()
            return None

    def role(self, port: int) -> str | None:
        """``master``, ``slave`` or ``sentinel``; None when the server does not answer."""
        reply = self.ask(port, "ROLE")
        return str(reply[0]) if reply else None

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


class _Launcher:
    """What both launchers share: the list of every process started, `close`, the
    polling clients, the context manager."""

    def __init__(self) -> None:
        #: Every server ever created, in start order; `close` kills them all.
        self.processes: list[RedisServer] = []
        #: Process id of every process ever started (restarts included).
        self.all_pids: list[int] = []
        self.killed: set[int] = set()
        self._admin = _Admin()

    def _start(self, server: RedisServer) -> RedisServer:
        if server not in self.processes:
            self.processes.append(server)
        _OPEN.add(self)
        try:
            server.start()
        finally:
            if server.process is not None:
                self.all_pids.append(server.process.pid)
        return server

    def pids(self) -> list[int]:
        """Process ids of the processes that run now."""
        return [s.process.pid for s in self.processes if s.process and _running(s)]

    def role(self, port: int) -> str | None:
        """``ROLE`` of the server on `port` (``master``, ``slave``), None if it is down."""
        return self._admin.role(port)

    def close(self) -> None:
        """Kill every process ever started and remove their directories (idempotent)."""
        self._admin.close()
        for server in reversed(self.processes):
            server.close()
        _OPEN.discard(self)

    def start(self, timeout: float = 20.0) -> Self:
        """Start every process and wait until the whole set is ready; on any failure,
        close what was started and raise."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisCluster(_Launcher):
    """A Redis Cluster of ``masters`` shards with ``replicas`` replicas each on loopback.

    Use as a context manager, or call `start` and, in a ``finally``, `close`.
    """

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        super().__init__()
        self.masters = masters
        self.replicas = replicas
        #: Every node, by client port.
        self.nodes: dict[int, RedisServer] = {}
        self.seeds: list[int] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> Self:
        try:
            count = self.masters * (1 + self.replicas)
            # Client and bus ports both chosen free (``port + 10000`` may not be).
            ports = free_ports(2 * count)
            for port, bus_port in zip(ports[:count], ports[count:], strict=True):
                self.nodes[port] = RedisServer(
                    port,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(bus_port),
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            for server in self.nodes.values():
                self._start(server)
            self.seeds = list(self.nodes)[: self.masters]
            redis_cli = _which("redis-cli")
            created = subprocess.run(
                [
                    redis_cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if created.returncode != 0 or "[OK] All 16384 slots covered" not in created.stdout:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
            wait_for(self.is_healthy, timeout, "cluster ok on every node, replicas linked")
        except BaseException:
            self.close()
            raise
        return self

    # -- what it looks like --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The project's URL form for a cluster: ``redis+cluster://`` and the seed nodes."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.seeds)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """The seed nodes as (host, port): ``[ClusterNode(*n) for n in startup_nodes]``."""
        return [("127.0.0.1", port) for port in self.seeds]

    @property
    def live_ports(self) -> list[int]:
        return [port for port, server in self.nodes.items() if _running(server)]

    def cluster_info(self, port: int) -> dict[str, str] | None:
        reply = self._admin.ask(port, "CLUSTER", "INFO")
        if reply is None:
            return None
        text = reply if isinstance(reply, str) else str(reply)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def slot_ranges(self, port: int) -> list[tuple[int, int, int, list[int]]] | None:
        """(first slot, last slot, master port, replica ports) as the node on `port` sees it."""
        reply = self._admin.ask(port, "CLUSTER", "SLOTS")
        if reply is None:
            return None
        return [
            (int(e[0]), int(e[1]), int(e[2][1]), [int(replica[1]) for replica in e[3:]])
            for e in reply
        ]

    def topology(self, port: int) -> dict[int, list[int]] | None:
        """Master port -> its replicas' ports, from ``CLUSTER NODES`` of the node on `port`
        (``CLUSTER SLOTS`` hides a replica while its replication offset is still 0)."""
        reply = self._admin.ask(port, "CLUSTER", "NODES")
        if reply is None:
            return None
        ports: dict[str, int] = {}
        masters: list[str] = []
        replicas: list[tuple[str, str]] = []
        for line in str(reply).splitlines():
            node_id, address, flags, master_id = line.split()[:4]
            ports[node_id] = int(address.split("@")[0].rsplit(":", 1)[1])
            if "fail" in flags.split(","):
                continue
            if "master" in flags.split(","):
                masters.append(node_id)
            elif "slave" in flags.split(","):
                replicas.append((node_id, master_id))
        return {ports[m]: sorted(ports[r] for r, of in replicas if of == m) for m in masters}

    def _owner_views(self, slot: int) -> list[int]:
        views = []
        for port in self.live_ports:
            ranges = self.slot_ranges(port)
            for first, last, master, _ in ranges or ():
                if first <= slot <= last:
                    views.append(master)
        return views

    def master_for_slot(self, slot: int) -> int:
        """The port of the master owning `slot`, as most live nodes see it."""
        views = self._owner_views(slot)
        if not views:
            raise RuntimeError(f"no live node knows an owner of slot {slot}")
        return Counter(views).most_common(1)[0][0]

    def master_for_key(self, key: str | bytes) -> int:
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def is_healthy(self) -> bool:
        """Every live node: ``cluster_state:ok`` with all slots ok and every node known,
        and a view of every master with its replicas (gossip has spread the replicas'
        roles); every replica's ``master_link_status:up``; the expected number of masters."""
        live = self.live_ports
        roles: Counter[str] = Counter()
        for port in live:
            info = self.cluster_info(port)
            if (
                info is None
                or info.get("cluster_state") != "ok"
                or info.get("cluster_slots_ok") != str(SLOTS)
                or info.get("cluster_known_nodes") != str(len(self.nodes))
            ):
                return False
            topology = self.topology(port)
            if topology is None or any(len(seen) < self.replicas for seen in topology.values()):
                return False
            role = self._admin.role(port)
            roles[str(role)] += 1
            if role == "slave":
                replication = self._admin.info(port, "replication")
                if not replication or replication.get("master_link_status") != "up":
                    return False
        return roles["master"] == self.masters

    # -- faults --------------------------------------------------------------------------

    def kill_master_for_key(self, key: str | bytes) -> int:
        """SIGKILL the master owning `key`'s slot; returns its port."""
        port = self.master_for_key(key)
        self.kill_node(port)
        return port

    def kill_node(self, port: int) -> None:
        self.nodes[port].kill()
        self.killed.add(port)

    def wait_promoted(self, slot: int, timeout: float = 10.0) -> int:
        """Wait until every live node names a live master for `slot` and says
        ``cluster_state:ok``; returns that master's port."""

        def promoted() -> int:  # 0: not yet
            views = self._owner_views(slot)
            if len(views) != len(self.live_ports) or len(set(views)) != 1:
                return 0
            owner = views[0]
            if owner in self.killed or self._admin.role(owner) != "master":
                return 0
            for port in self.live_ports:
                info = self.cluster_info(port)
                if info is None or info.get("cluster_state") != "ok":
                    return 0
            return owner

        return wait_for(promoted, timeout, f"a replica takes over slot {slot}")

    def restart_node(self, port: int) -> None:
        """Start a killed node again on its own directory and ``nodes.conf`` (its data is
        gone: no persistence); it rejoins, the cluster turns it into a replica."""
        self._start(self.nodes[port])
        self.killed.discard(port)

    def wait_replica(self, port: int, timeout: float = 15.0) -> int:
        """Wait until the node on `port` is a replica with its link up and the cluster is
        healthy; returns its master's port."""

        def replica() -> int:
            reply = self._admin.ask(port, "ROLE")
            if not reply or reply[0] != "slave" or reply[3] != "connected":
                return 0
            return int(reply[2]) if self.is_healthy() else 0

        return wait_for(replica, timeout, f"node {port} rejoins as a replica")


class SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` watching one master; its config file lives (and is
    rewritten by the sentinel) in its own directory.

    ``peers`` (port, id) and ``replicas`` are written into the config as ``known-sentinel``
    and ``known-replica`` lines, as a sentinel writes them itself once it has met them:
    it then talks to them at once instead of waiting for their first hello (2 s).
    """

    def __init__(
        self,
        port: int,
        myid: str,
        service: str,
        master_port: int,
        quorum: int,
        peers: Sequence[tuple[int, str]] = (),
        replicas: Sequence[int] = (),
    ) -> None:
        super().__init__(port)
        self.myid = myid
        self.config = Path(self.dir) / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"sentinel myid {myid}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {service} 1000",
            f"sentinel failover-timeout {service} 5000",
            f"sentinel parallel-syncs {service} 1",
            *(f"sentinel known-replica {service} 127.0.0.1 {port}" for port in replicas),
            *(
                f"sentinel known-sentinel {service} 127.0.0.1 {port} {peer_id}"
                for port, peer_id in peers
            ),
        ]
        self.config.write_text("\n".join([*lines, ""]))

    def command(self) -> list[str]:
        return [redis_server_binary(), str(self.config), "--sentinel"]


class RedisSentinelSet(_Launcher):
    """One master and ``replicas`` replicas watched by ``sentinels`` sentinels on loopback.

    Use as a context manager, or call `start` and, in a ``finally``, `close`.
    """

    def __init__(
        self, service: str = DEFAULT_SERVICE, replicas: int = 2, sentinels: int = 3
    ) -> None:
        super().__init__()
        self.service = service
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.quorum = sentinels // 2 + 1
        #: The data nodes by port (the first is the original master).
        self.servers: dict[int, RedisServer] = {}
        self.sentinels: list[SentinelServer] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> Self:
        try:
            sync = ["--repl-diskless-sync-delay", "0"]
            master = self._start(RedisServer(extra_args=sync))
            self.servers[master.port] = master
            for _ in range(self.replica_count):
                replica = RedisServer(
                    extra_args=[*sync, "--replicaof", "127.0.0.1", str(master.port)]
                )
                self.servers[replica.port] = self._start(replica)
            # Replicas in sync first: a sentinel's first INFO of the master then lists them.
            wait_for(lambda: self.replicas_in_sync(master.port), timeout, "replicas in sync")
            ports = free_ports(self.sentinel_count, taken=list(self.servers))
            ids = {port: secrets.token_hex(20) for port in ports}
            for port in ports:
                sentinel = SentinelServer(
                    port,
                    ids[port],
                    self.service,
                    master.port,
                    self.quorum,
                    peers=[(peer, ids[peer]) for peer in ports if peer != port],
                    replicas=[replica for replica in self.servers if replica != master.port],
                )
                self.sentinels.append(sentinel)
            for sentinel in self.sentinels:
                self._start(sentinel)
            wait_for(self.sentinels_ready, timeout, "every sentinel knows the whole set")
        except BaseException:
            self.close()
            raise
        return self

    # -- what it looks like --------------------------------------------------------------

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each sentinel: ``redis.sentinel.Sentinel(sentinel_addresses)``."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def replicas_in_sync(self, master_port: int) -> bool:
        """The master has every live replica online at its own replication offset."""
        info = self._admin.info(master_port, "replication")
        if not info or info.get("role") != "master":
            return False
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        live = sum(1 for port, s in self.servers.items() if port != master_port and _running(s))
        return len(replicas) == live and all(
            r.get("state") == "online" and int(r.get("offset", -1)) == info["master_repl_offset"]
            for r in replicas
        )

    def sentinels_ready(self) -> bool:
        """Every sentinel sees the master up, its replicas up and the other sentinels."""
        expected_replicas = len(self.servers) - 1
        for sentinel in self.sentinels:
            # One command string, so that redis-py parses the reply into dicts.
            master = self._admin.ask(sentinel.port, "SENTINEL MASTER", self.service)
            replicas = self._admin.ask(sentinel.port, "SENTINEL SLAVES", self.service)
            others = self._admin.ask(sentinel.port, "SENTINEL SENTINELS", self.service)
            if master is None or replicas is None or others is None:
                return False
            if not _up(master) or not master.get("is_master"):
                return False
            if len([r for r in replicas if _up(r)]) != expected_replicas:
                return False
            if len([o for o in others if _up(o)]) != self.sentinel_count - 1:
                return False
        return True

    def master_port(self) -> int:
        """The master's port as a majority of the sentinels name it."""
        views = []
        for sentinel in self.sentinels:
            reply = self._admin.ask(
                sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
            )
            if reply:
                views.append(int(reply[1]))
        if views:
            port, votes = Counter(views).most_common(1)[0]
            if votes >= self.quorum:
                return port
        raise RuntimeError(f"no majority of sentinels names a master: {views}")

    # -- faults --------------------------------------------------------------------------

    def kill_master(self) -> int:
        """SIGKILL the current master; returns its port."""
        port = self.master_port()
        self.kill(port)
        return port

    def kill(self, port: int) -> None:
        self.servers[port].kill()
        self.killed.add(port)

    def wait_failover(self, old_port: int, timeout: float = 10.0) -> int:
        """Wait until every sentinel names one master other than `old_port` and it answers
        ``ROLE`` as master; returns its port."""

        def elected() -> int:
            views = set()
            for sentinel in self.sentinels:
                reply = self._admin.ask(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
                views.add(int(reply[1]) if reply else 0)
            if len(views) != 1:
                return 0
            port = views.pop()
            if port in (0, old_port) or self.role(port) != "master":
                return 0
            return port

        return wait_for(elected, timeout, f"sentinels elect a master other than {old_port}")

    def restart(self, port: int) -> None:
        """Start a killed data node again on its old command line (an old master comes
        back empty and claiming to be master; the sentinels then make it a replica)."""
        self._start(self.servers[port])
        self.killed.discard(port)

    def wait_replica(self, port: int, timeout: float = 30.0) -> int:
        """Wait until the node on `port` is a replica of the sentinels' master with its
        link up; returns the master's port."""

        def replica() -> int:
            reply = self._admin.ask(port, "ROLE")
            if not reply or reply[0] != "slave" or reply[3] != "connected":
                return 0
            master = int(reply[2])
            with contextlib.suppress(RuntimeError):
                if master == self.master_port():
                    return master
            return 0

        return wait_for(replica, timeout, f"node {port} becomes a replica")


@contextlib.contextmanager
def redis_py_client(url: str, **options: Any) -> Iterator[redis.Redis | RedisClusterClient]:
    """A redis-py client for any engine URL, built here by hand (no credentials, no
    query string) for tests that must not depend on the library's own factory:
    ``redis://`` as it is, ``redis+sentinel://`` the service's master through the
    sentinels, ``redis+cluster://`` a RedisCluster on the seeds. Closed on exit."""
    parts = urlsplit(url)
    hosts = [_host_port(host) for host in parts.netloc.split(",")]
    if parts.scheme == "redis+cluster":
        seeds = [ClusterNode(host, port) for host, port in hosts]
        cluster = RedisClusterClient(startup_nodes=seeds, **options)
        try:
            yield cluster
        finally:
            cluster.close()
    elif parts.scheme == "redis+sentinel":
        sentinel = Sentinel(hosts, socket_timeout=options.get("socket_timeout", 1.0))
        master = sentinel.master_for(parts.path.strip("/"), **options)
        try:
            yield master
        finally:
            master.close()
            sentinel.close()
    else:
        client = redis.Redis.from_url(url, **options)
        try:
            yield client
        finally:
            client.close()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _up(state: dict[str, Any]) -> bool:
    """A sentinel's view of an instance says it is connected and not down."""
    return not any(state.get(flag) for flag in ("is_sdown", "is_odown", "is_disconnected"))


def _running(server: RedisServer) -> bool:
    return server.process is not None and server.process.poll() is None


def _which(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found (apt-get install redis-server)")
    return found
