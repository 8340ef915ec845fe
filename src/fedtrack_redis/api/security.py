"""Security headers on every response of the admin API (docs/safety.md).

Every response carries ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``,
``X-Content-Type-Options: nosniff`` and a ``Content-Security-Policy``: JSON and plain
responses get one that allows nothing; the dashboard page one that allows its own
inline script by hash, its stylesheet and requests to its own origin; ``/docs`` (a page
rendered on the server, no script) its stylesheet alone. Nothing comes from a CDN.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LOCKED = "frame-ancestors 'none'; base-uri 'none'"

#: JSON, errors, metrics, the stylesheet: nothing may load or run.
API_POLICY = f"default-src 'none'; {_LOCKED}; form-action 'none'"
#: ``/docs``: server-rendered HTML with the dashboard's stylesheet, no script.
DOCS_POLICY = f"default-src 'none'; style-src 'self'; {_LOCKED}; form-action 'none'"

COMMON_HEADERS: Mapping[str, str] = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def dashboard_policy(script_hashes: list[str]) -> str:
    """The dashboard's policy: its inline scripts by hash, everything else from itself."""
    scripts = " ".join(script_hashes) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'self'; connect-src 'self';"
        f" img-src 'self' data:; {_LOCKED}; form-action 'self'"
    )


def headers_for(path: str, policies: Mapping[str, str]) -> dict[str, str]:
    """Every security header of a response to `path`."""
    return {**COMMON_HEADERS, "Content-Security-Policy": policies.get(path, API_POLICY)}


class SecurityHeaders:
    """ASGI middleware: sets the headers of `headers_for` on every HTTP response."""

    def __init__(self, app: ASGIApp, policies: Mapping[str, str]) -> None:
        self.app = app
        self.policies = dict(policies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope["path"], self.policies)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
