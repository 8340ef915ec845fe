"""A child process holding its own PolicyStore, answering state queries over a pipe."""

from __future__ import annotations

from multiprocessing.connection import Connection

from fedtrack_redis import PolicyStore

State = tuple[int, str, bool, tuple[str, ...]]


def serve(connection: Connection, database_url: str, redis_url: str, namespace: str) -> None:
    store = PolicyStore(database_url, redis_url, namespace=namespace, resync_interval=0.2).init()
    try:
        connection.send("ready")
        while True:
            command = connection.recv()
            if command == "quit":
                return
            if command == "state":
                connection.send(
                    (
                        store.version,
                        store.get_policy(),
                        store.get_enabled(),
                        tuple(sorted(store.list_rules())),
                    )
                )
    finally:
        store.close()
        connection.close()
