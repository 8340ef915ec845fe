"""The dashboard page (a single HTML document; its data requests carry the admin token)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def page() -> str:
    return (resources.files("fedtrack_redis") / "api" / "dashboard.html").read_text("utf-8")
