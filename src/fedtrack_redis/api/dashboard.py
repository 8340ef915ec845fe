"""The dashboard page (a single HTML document; its data requests carry the admin token),
its stylesheet, and the Content-Security-Policy that lets exactly its inline script run.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from .security import dashboard_policy

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _read(name: str) -> str:
    text = (resources.files("fedtrack_redis") / "api" / name).read_text("utf-8")
    return text.replace("\r\n", "\n")  # what a browser hashes after parsing


@cache
def page() -> str:
    return _read("dashboard.html")


@cache
def stylesheet() -> str:
    return _read("dashboard.css")


def script_hashes(html: str) -> list[str]:
    """CSP sources (``'sha256-…'``) of every inline ``<script>`` of `html`."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def content_security_policy() -> str:
    """The page's policy, computed from the file as served."""
    return dashboard_policy(script_hashes(page()))
