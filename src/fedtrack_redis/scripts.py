"""Load the Lua scripts shipped in the wheel and run them on the node that owns their keys.

The sources live in ``scripts/lua/`` in the repository; the build maps them to
``fedtrack_redis/lua/`` inside the package. ``redis.commands.core.Script`` reloads a
script by itself when the server answers NOSCRIPT (after ``SCRIPT FLUSH``, a restart, or
on a promoted replica, which never has our scripts). `Scripts` adds the routing: every
script's keys share one hash tag, so the node that owns the first key runs it; a MOVED /
ASK answer (a cluster that changed its slot map) refreshes the map and runs it once more.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.commands.core import Script
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from .errors import FedtrackError, UnreplicatedError

if TYPE_CHECKING:
    from .engine import RedisEngine

_REPO_LUA = Path(__file__).resolve().parents[2] / "scripts" / "lua"
#: Answers that mean "ask the cluster where the slot lives now".
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)


@cache
def lua_source(name: str) -> str:
    """Source text of ``<name>.lua`` from the installed package (or the source tree)."""
    packaged = resources.files("fedtrack_redis") / "lua" / f"{name}.lua"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # Editable installs run from the source tree, where the scripts sit in scripts/lua/.
    candidate = _REPO_LUA / f"{name}.lua"
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    raise FedtrackError(f"Lua script {name!r} is missing from the installation")


def register(client: Any, name: str) -> Script:
    """A `Script` for ``<name>.lua`` (its SHA is computed locally; no I/O)."""
    return Script(client, lua_source(name))


class Scripts:
    """The library's scripts for one engine, each run on the node owning its keys."""

    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine
        self._scripts: dict[str, Script] = {}

    @property
    def engine(self) -> RedisEngine:
        return self._engine

    def script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = register(self._engine.client, name)
        return script

    def load(self, client: redis.Redis, name: str) -> str:
        """Load ``<name>.lua`` into `client`'s server and return its SHA, for EVALSHA
        commands sent without `run` (`ahead.send_ahead`)."""
        sha = self.script(name).sha
        if str(client.script_load(lua_source(name))) != sha:
            raise FedtrackError(f"Redis computed another SHA for {name}.lua")
        return sha

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """Run ``<name>.lua`` with `keys` (one hash tag) and `args` on the keys' node."""
        script = self.script(name)
        for attempt in range(3):
            client = self._engine.node_for(keys[0])
            try:
                return script(keys=list(keys), args=list(args), client=client)
            except REDIRECTS:
                if attempt == 2:
                    raise
                self._engine.refresh()
            except redis.ConnectionError:
                if attempt == 2 or self._engine.kind != "cluster":
                    raise
                self._engine.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    def run_confirmed(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """`run`, then ``WAIT N`` on the same connection when the engine has
        ``wait_replicas=N``: raises `UnreplicatedError` unless N replicas hold everything
        the node had done up to and including this call (G10)."""
        if self._engine.wait_args() is None:
            return self.run(name, keys, args)
        script = self.script(name)
        for attempt in range(3):
            client = self._engine.node_for(keys[0])
            try:
                with client.pipeline(transaction=False) as pipe:
                    script(keys=list(keys), args=list(args), client=pipe)
                    self._engine.confirm(pipe)
                    reply, replicas = pipe.execute()
            except REDIRECTS:
                if attempt == 2:
                    raise
                self._engine.refresh()
                continue
            if not self._engine.confirmed(replicas):
                raise UnreplicatedError(
                    f"only {replicas} of {self._engine.wait_replicas} replicas confirmed"
                )
            return reply
        raise AssertionError("unreachable")  # pragma: no cover
