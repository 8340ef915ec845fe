"""Child processes each holding its own PolicyStore, answering queries over a pipe."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from fedtrack_redis import PolicyStore, check_federation_policy
from servers import wait_for

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
            elif command == "rules":
                connection.send(tuple(dataclasses.astuple(rule) for rule in store.rules()))
            elif isinstance(command, tuple) and command[0] == "check":
                connection.send((check_federation_policy(command[1], store=store), time.time()))
    finally:
        store.close()
        connection.close()


class Workers:
    """Child processes, each with its own PolicyStore."""

    def __init__(self, count: int, database_url: str, redis_url: str, namespace: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=serve, args=(child, database_url, redis_url, namespace), daemon=True
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            assert pipe.poll(60), "worker did not start"
            assert pipe.recv() == "ready"

    def states(self) -> list[State]:
        for pipe in self.pipes:
            pipe.send("state")
        return [pipe.recv() for pipe in self.pipes]

    def wait_all(self, predicate: Callable[[State], bool], message: str) -> None:
        wait_for(lambda: all(predicate(s) for s in self.states()), 5, message)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send("quit")
        for process in self.processes:
            process.join(15)
            assert process.exitcode == 0
        for pipe in self.pipes:
            pipe.close()

    def ask(self, command: Any) -> list[Any]:
        """Send `command` to every worker; their answers, in order."""
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]
