"""Load the Lua scripts shipped in the wheel and register them once per client.

The sources live in ``scripts/lua/`` in the repository; the build maps them to
``fedtrack_redis/lua/`` inside the package. ``redis.commands.core.Script`` reloads a
script by itself when the server answers NOSCRIPT (after ``SCRIPT FLUSH`` or a restart).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import redis
from redis.commands.core import Script

from .errors import FedtrackError

_REPO_LUA = Path(__file__).resolve().parents[2] / "scripts" / "lua"


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


def register(client: redis.Redis, name: str) -> Script:
    """A `Script` bound to `client` for ``<name>.lua``."""
    return client.register_script(lua_source(name))
