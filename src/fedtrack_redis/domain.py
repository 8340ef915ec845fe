"""`normalize_domain`: one spelling per domain, so rules, keys and rows always agree.

Everything that becomes a Redis key, a Lua argument or an SQL value goes through here.
The output only ever holds ``a-z``, ``0-9``, ``.``, ``-`` and ``:`` (IPv6), so it can
never break a key, a hash tag, a script call or a query.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from .errors import InvalidDomainError

MAX_NAME_OCTETS = 253
MAX_LABEL_OCTETS = 63

# After IDNA: letters, digits and inner hyphens per label (RFC 1123 host names).
_ASCII_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ASCII_NAME_CHARS = re.compile(r"^[A-Za-z0-9.-]+$")
_DOTTED_DIGITS = re.compile(r"^[0-9.]+$")


def normalize_domain(value: str) -> str:
    """Return the canonical form of a domain name or an address literal.

    Trims whitespace, strips one pair of brackets (``[1.2.3.4]``, ``[IPv6:2001:db8::1]``,
    ``[2001:db8::1]``, ``[Mixed.Case]``), drops one trailing dot, lowercases, and encodes
    Unicode names with IDNA 2008 / UTS 46 (``münchen.de`` → ``xn--mnchen-3ya.de``).
    IPv6 addresses come out compressed; IPv4-mapped IPv6 comes out as the IPv4 address.

    Raises `InvalidDomainError` for anything no hostname or IP literal may be.
    """
    if not isinstance(value, str):
        raise InvalidDomainError(value, "not a string")
    text = value.strip()
    bracketed = len(text) >= 2 and text[0] == "[" and text[-1] == "]"
    if bracketed:
        text = text[1:-1].strip()
        if text[:5].lower() == "ipv6:":
            return _normalize_ipv6(value, text[5:])
    if not text:
        raise InvalidDomainError(value, "empty")
    if ":" in text:
        return _normalize_ipv6(value, text)
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise InvalidDomainError(value, "empty")
    if _ASCII_NAME_CHARS.match(text):
        name = text.lower()
        if "xn--" in name:
            name = _idna_encode(value, name)
    else:
        name = _idna_encode(value, text)
    if _DOTTED_DIGITS.match(name):
        return _normalize_ipv4(value, name)
    _check_hostname(value, name)
    return name


def _normalize_ipv6(original: str, text: str) -> str:
    try:
        address = ipaddress.IPv6Address(text.strip())
    except ValueError:
        raise InvalidDomainError(original, "not a valid IPv6 address") from None
    if address.scope_id is not None:
        raise InvalidDomainError(original, "IPv6 scope ids are not allowed")
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def _normalize_ipv4(original: str, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidDomainError(original, "not a valid IPv4 address") from None


def _idna_encode(original: str, text: str) -> str:
    try:
        encoded = idna.encode(text, uts46=True, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise InvalidDomainError(original, f"not a valid host name ({exc})") from None
    return encoded.decode("ascii").lower()


def _check_hostname(original: str, name: str) -> None:
    if len(name) > MAX_NAME_OCTETS:
        raise InvalidDomainError(original, f"longer than {MAX_NAME_OCTETS} octets")
    for label in name.split("."):
        if not label:
            raise InvalidDomainError(original, "empty label")
        if len(label) > MAX_LABEL_OCTETS:
            raise InvalidDomainError(original, f"label longer than {MAX_LABEL_OCTETS} octets")
        if not _ASCII_LABEL.match(label):
            raise InvalidDomainError(original, f"label {label!r} holds characters no host name may")


class DomainMemo:
    """A bounded memo of raw spelling → normalized name (or the error) for the hot path.

    `normalize_domain` costs microseconds (IDNA, regexes); a dict lookup costs tens of
    nanoseconds. Workers see the same few thousand domains over and over, so each
    spelling is normalized once. The memo is cleared when it reaches `max_size`, which
    bounds memory under a flood of distinct names.
    """

    __slots__ = ("_cache", "_max_size")

    def __init__(self, max_size: int = 200_000) -> None:
        self._cache: dict[str, str | InvalidDomainError] = {}
        self._max_size = max_size

    def get(self, value: str) -> str | None:
        """Normalized name, or None when the value is not a valid domain (never raises)."""
        result = self._cache.get(value)
        if result is None:
            result = self._fill(value)
        return result if type(result) is str else None

    def require(self, value: str) -> str:
        """Normalized name, raising `InvalidDomainError` like `normalize_domain`."""
        result = self._cache.get(value)
        if result is None:
            result = self._fill(value)
        if type(result) is str:
            return result
        assert isinstance(result, InvalidDomainError)
        raise InvalidDomainError(result.value, result.reason)

    def _fill(self, value: str) -> str | InvalidDomainError:
        result: str | InvalidDomainError
        try:
            result = normalize_domain(value)
        except InvalidDomainError as exc:
            result = exc
        if not isinstance(value, str):
            return result
        if len(self._cache) >= self._max_size:
            self._cache.clear()
        self._cache[value] = result
        return result


DEFAULT_MEMO = DomainMemo()
#: The default memo's raw lookup, for `check_federation_policy`: spelling → normalized
#: name, an `InvalidDomainError`, or None when not memoized yet. One C call where
#: `DomainMemo.get` costs two Python-level ones.
memo_lookup = DEFAULT_MEMO._cache.get
