"""What may be shown of a URL or of an error: passwords and driver messages stay out.

`redact_url` replaces the password of every URL in a text (SQLAlchemy and Redis URLs,
``user:pass@`` or ``:pass@``, comma-separated host lists, ``password=`` parameters) with
``***``. `unavailable_reason` is the one line a "service unavailable" error may show: our
own message without the text of the driver exceptions chained under it (driver texts can
carry connection parameters, SQL, or a password a DSN parser quoted back), plus the
driver exception's class name. The CLI and the admin API print and log only these.
"""

from __future__ import annotations

import re

from .errors import FedtrackError

MASK = "***"

#: ``scheme://`` then the userinfo: everything up to the last ``@`` before the end of the
#: token (whitespace or a quote). Greedy on purpose: a password holding ``@``, ``/`` or
#: ``,`` is hidden whole; with per-host credentials the hosts before the last ``@`` are
#: hidden too, which errs on the safe side.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s'\"<>`]*)@")
#: ``password=…`` in a query string or a libpq / redis keyword string.
_PASSWORD_PARAMETER = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^&\s,;'\"]*)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """`url` (or any text holding URLs) with every password replaced by ``***``.

    ``postgresql+psycopg://fedtrack:s3cret@db:5432/x`` → ``postgresql+psycopg://fedtrack:***@db:5432/x``;
    ``redis://:s3cret@h1:26379,h2:26379/0`` → ``redis://:***@h1:26379,h2:26379/0``; a
    user name alone (``redis://default@host``) is kept; ``?password=s3cret`` → ``?password=***``.
    """
    text = _USERINFO.sub(_mask_userinfo, url)
    return _PASSWORD_PARAMETER.sub(lambda m: m.group("key") + MASK, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, colon, _password = userinfo.partition(":")
    return f"{match.group('scheme')}{user}{colon and ':' + MASK}@"


def driver_errors(exc: BaseException) -> list[BaseException]:
    """The exceptions chained under `exc` (causes and contexts) that are not ours."""
    found: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, FedtrackError):
            found.append(current)
        current = current.__cause__ or current.__context__
    return found


def unavailable_reason(exc: BaseException) -> str:
    """One line for an unavailable service: our message without driver text, plus the class.

    ``BackendUnavailableError("reading the stats: Error 111 connecting to …")`` raised from
    a ``redis.ConnectionError`` gives ``reading the stats (ConnectionError)``.
    """
    drivers = driver_errors(exc)
    message = str(exc) if isinstance(exc, FedtrackError) else ""
    for driver in drivers:
        for text in _texts(driver):
            message = message.replace(text, "")
    message = _tidy(message)
    if drivers:
        name = type(drivers[0]).__name__
        if not message:
            message = "unavailable"
        if f"({name})" not in message:
            message = f"{message} ({name})"
    return redact_url(message) or "unavailable"


def _texts(driver: BaseException) -> list[str]:
    """Every way a library message may have quoted `driver`, longest first."""
    texts = {str(driver), repr(driver)}
    orig = getattr(driver, "orig", None)  # SQLAlchemy's wrapper of the DBAPI error
    if isinstance(orig, BaseException):
        texts.update((str(orig), repr(orig)))
    lines = {line.strip() for text in list(texts) for line in text.splitlines()}
    texts.update(lines)
    # Very short texts (a bare "0") would cut into our own words; driver messages are longer.
    return sorted((t for t in texts if len(t.strip()) >= 3), key=len, reverse=True)


def _tidy(message: str) -> str:
    message = " ".join(message.split())
    message = re.sub(r"\(\s*[:;,]?\s*\)", "", message)  # "( )" left where a text was
    message = re.sub(r"\s+([;,.)])", r"\1", message)
    message = re.sub(r"[:;,]\s*(?=[;,.)]|$)", "", message)  # "x: " left dangling
    message = re.sub(r"\s{2,}", " ", message)
    return message.strip(" :;,-")
