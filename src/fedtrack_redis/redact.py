"""Hide passwords in URLs before they reach a message, a log line or a ``repr``."""

from __future__ import annotations

import re

# scheme://user:password@host  →  scheme://user:***@host (also with an empty user)
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
# ?password=… / &sentinel_password=… in a query string
_QUERY = re.compile(r"(?P<key>[?&](?:[a-z_]*password)=)[^&\s]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with every password replaced by ``***`` (works on any text holding URLs)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(url))
    return _QUERY.sub(lambda m: f"{m['key']}***", text)
