"""`check_federation_policy`: the per-message decision, from process memory only (G1).

Kept apart from the store so the hot path is one short function a reader can audit:
no I/O, no lock, no exception for an invalid domain (it simply matches no rule).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .domain import DEFAULT_MEMO, normalize_domain
from .policy.matcher import rule_allows
from .policy.modes import ACCEPT, REJECT
from .policy.rules import ALLOW, BLOCK, EXCEPTION, Rule

if TYPE_CHECKING:
    from .policy.store import PolicyStore

log = logging.getLogger("fedtrack_redis.policy")

SETTING_KEY = "__FEDERATION_POLICY__"
GetSetting = Callable[[str], tuple[str, bool, object]]

_MODES = (ACCEPT, REJECT)
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
    cluster policy of `store` (default `global_policy()`), else ACCEPT. When the
    cluster's federation switch is off, everything but the local domain is refused.
    Otherwise the most specific matching rule decides: a ``block`` rule refuses and an
    ``allow`` rule allows under any mode; an ``exception`` rule refuses under ACCEPT
    (a blocklist) and allows under REJECT (an allowlist); no rule allows under ACCEPT
    and refuses under REJECT. Under an unknown policy exception rules and no rule
    allow, with one warning per distinct value. No I/O, no lock, never raises for an
    invalid domain (it matches no rule).
    """
    if store is None:
        from .globals import global_policy

        store = global_policy()
    view = store.view  # one immutable snapshot: rules, mode and switch of one version
    try:  # a spelling seen before: one dict lookup gives its name and its deciding rule
        name, rule = view.spellings[domain]
    except KeyError:
        name, rule = view.learn(domain)  # raises NotInitializedError before init()
    if local_domain and name is not None:
        local = _local
        if local[0] is not local_domain:  # callers pass the same string every time
            local = _remember_local(local_domain)
        if name == local[1]:
            return True
    if not view.enabled:
        return False
    if policy:
        mode = policy if policy in _MODES else policy.upper()
    elif get_setting is not None:
        value, found, error = get_setting(SETTING_KEY)
        if found and error is None and value:
            mode = value if value in _MODES else value.upper()
        else:
            mode = view.policy
    else:
        mode = view.policy
    if rule is None:  # the mode's default
        if mode == ACCEPT:
            return True
        if mode == REJECT:
            return False
        _warn_unknown(mode)
        return True
    effect = rule.effect
    if effect == EXCEPTION:
        if mode == ACCEPT:
            return False
        if mode == REJECT:
            return True
        _warn_unknown(mode)
        return True
    if mode not in _MODES:  # block and allow rules apply under any mode
        _warn_unknown(mode)
    return effect == ALLOW


#: The last local domain asked about and its normalized name (None when invalid).
_local: tuple[str, str | None] = ("", None)


def _remember_local(local_domain: str) -> tuple[str, str | None]:
    global _local
    _local = (local_domain, DEFAULT_MEMO.get(local_domain))
    return _local


def _warn_unknown(mode: str) -> None:
    with _warned_lock:
        if mode in _warned:
            return
        _warned.add(mode)
    log.warning("unknown federation policy %r: allowing (expected ACCEPT or REJECT)", mode)


@dataclass(frozen=True)
class Decision:
    """A decision with its reasons, for the CLI's and the API's ``check``.

    `rule` is the text of the deciding rule, None when the local domain, the federation
    switch or the mode's default decides; `matched` the text of every rule matching the
    domain, most specific first (`matched_rules` the same rules, every field).
    """

    domain: str
    allowed: bool
    policy: str
    reason: str
    rule: str | None
    matched: tuple[str, ...] = ()
    matched_rules: tuple[Rule, ...] = field(default=(), repr=False)


def explain_federation_policy(
    domain: str, store: PolicyStore, local_domain: str = "", policy: str = ""
) -> Decision:
    """The same decision as `check_federation_policy` (one view of the store: rules,
    mode and switch of one version), with the reason spelled out. Raises
    `InvalidDomainError` for an invalid `domain`."""
    name = normalize_domain(domain)
    store.get_enabled()  # raises NotInitializedError with the usual message
    view = store.view
    mode = policy.upper() if policy else view.policy
    matcher = view.matcher
    rules = tuple(rule for rule in map(matcher.get, matcher.matched(name)) if rule is not None)
    texts = tuple(rule.text for rule in rules)
    deciding = rules[0] if rules else None
    if local_domain and name == normalize_domain(local_domain):
        return Decision(name, True, mode, "local domain is always allowed", None, texts, rules)
    if not view.enabled:
        return Decision(
            name, False, mode, "federation is disabled cluster-wide", None, texts, rules
        )
    known = mode in (ACCEPT, REJECT)
    if not known:
        _warn_unknown(mode)
    allowed = rule_allows(deciding, mode)
    if deciding is None or (deciding.effect == EXCEPTION and not known):
        reason = f"{mode} policy, no rule matches" if known else f"unknown policy {mode!r} allows"
        return Decision(name, allowed, mode, reason, None, texts, rules)
    if deciding.effect == BLOCK:
        reason = "blocked by a block rule"
    elif deciding.effect == ALLOW:
        reason = "allowed by an allow rule"
    else:
        reason = "blocked by rule" if mode == ACCEPT else "allowed by rule"
    return Decision(name, allowed, mode, reason, deciding.text, texts, rules)
