"""`check_federation_policy`: the per-message decision, from process memory only (G1).

Kept apart from the store so the hot path is one short function a reader can audit:
no I/O, no lock, no exception for an invalid domain (it simply matches no rule).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .domain import DEFAULT_MEMO, memo_lookup
from .policy.state import ACCEPT, REJECT

if TYPE_CHECKING:
    from .policy.store import PolicyStore

log = logging.getLogger("fedtrack_redis.policy")

SETTING_KEY = "__FEDERATION_POLICY__"
GetSetting = Callable[[str], tuple[str, bool, object]]

_warned: set[str] = set()
_warned_lock = threading.Lock()


def check_federation_policy(
    domain: str,
    policy: str = "",
    local_domain: str = "",
    get_setting: GetSetting | None = None,
    *,
    store: PolicyStore | None = None,
) -> bool:
    """Whether this host may exchange mail with `domain`.

    The local domain is always allowed. The effective policy is `policy`, else what
    ``get_setting("__FEDERATION_POLICY__")`` returns as ``(value, True, None)``, else the
    cluster policy of `store` (default `global_policy()`), else ACCEPT. ACCEPT allows
    unless a rule matches (blocklist); REJECT allows only if a rule matches (allowlist).
    An unknown policy allows, with one warning per distinct value. When the cluster's
    federation switch is off, everything but the local domain is refused.
    """
    if store is None:
        from .globals import global_policy

        store = global_policy()
    view = store.view  # one immutable snapshot: rules, mode and switch of one version
    if not view.ready:
        store.has_rule(domain)  # raises NotInitializedError with the usual message
    # Known spellings cost one dict lookup each; DEFAULT_MEMO.get normalizes the others.
    name = memo_lookup(domain)
    if name.__class__ is not str:
        name = DEFAULT_MEMO.get(domain)
    if local_domain and name is not None:
        local = memo_lookup(local_domain)
        if local.__class__ is not str:
            local = DEFAULT_MEMO.get(local_domain)
        if name == local:
            return True
    if not view.enabled:
        return False
    mode = policy.upper() if policy else ""
    if not mode and get_setting is not None:
        value, found, error = get_setting(SETTING_KEY)
        if found and error is None and value:
            mode = value.upper()
    if not mode:
        mode = view.policy
    matched = name is not None and name in view.rules
    if mode == ACCEPT:
        return not matched
    if mode == REJECT:
        return matched
    _warn_unknown(mode)
    return True


def _warn_unknown(mode: str) -> None:
    with _warned_lock:
        if mode in _warned:
            return
        _warned.add(mode)
    log.warning("unknown federation policy %r: allowing (expected ACCEPT or REJECT)", mode)


@dataclass(frozen=True)
class Decision:
    """A decision with its reasons, for the CLI's and the API's ``check``."""

    domain: str
    allowed: bool
    policy: str
    reason: str
    rule: str | None


def explain_federation_policy(
    domain: str, store: PolicyStore, local_domain: str = "", policy: str = ""
) -> Decision:
    """The same decision as `check_federation_policy`, with the reason spelled out."""
    from .domain import normalize_domain

    name = normalize_domain(domain)
    allowed = check_federation_policy(name, policy, local_domain, store=store)
    mode = policy.upper() if policy else store.get_policy()
    rule = name if store.has_rule(name) else None
    if local_domain and name == normalize_domain(local_domain):
        reason = "local domain is always allowed"
    elif not store.get_enabled():
        reason = "federation is disabled cluster-wide"
    elif mode == ACCEPT:
        reason = "blocked by rule" if rule else "ACCEPT policy, no rule matches"
    elif mode == REJECT:
        reason = "allowed by rule" if rule else "REJECT policy, no rule matches"
    else:
        reason = f"unknown policy {mode!r} allows"
    return Decision(name, allowed, mode, reason, rule)
