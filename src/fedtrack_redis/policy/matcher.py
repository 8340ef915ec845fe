"""`Matcher`: which rule decides for a name, compiled once, asked thousands of times a second.

Precedence, most specific first: the exact rule; then the ``.suffix`` rule with the
longest suffix; then (for address literals) the network with the longest prefix; then
the glob with the most literal characters. Only globs can tie: among equally specific
globs a ``block`` rule decides, then an ``exception`` rule (which blocks under ACCEPT and
allows under REJECT, so it never lets through what an ``allow`` would refuse), then
``allow``; equal effects fall back to the smaller text, so the answer never depends on
insertion order.

Indexes, each a `Shards` map so a derived matcher shares them with its parent: every
rule by text, which finds the exact rules (no other kind's text can equal a normalized
name); ``.suffix`` texts keyed without the dot, found by walking the name's label
suffixes; networks keyed by (IP version, prefix length, network bits), probed for each
prefix length present, longest first; globs bucketed by both literal ends (a few
characters of the text before the first wildcard and after the last one, see `Glob`),
so a name meets only the globs that agree with its first and last characters.

The hot path never gets that far twice: `decide` and `allows` first read a per-matcher
decision cache (normalized name → deciding rule or None), which is one dict lookup.
Workers see the same few thousand names over and over; the cache holds at most
`cache_size` names and starts over when full. A derived matcher starts with an empty
cache, so a change can never leave a stale answer behind.

Expiry costs nothing per call: a matcher holds only the rules unexpired when it was
made, never reads the clock while matching, and exposes `next_expiry`, an instant at or
before the earliest expiry it holds. The owner swaps in `current()` once that instant
has passed (a timer armed for it, say); `current()` drops what has expired and computes
the next instant.
"""

from __future__ import annotations

import ipaddress
import math
import operator
import time
from collections.abc import Iterable, Iterator
from typing import Any

from .globs import Glob
from .modes import ACCEPT, REJECT
from .rules import ALLOW, EXACT, EXCEPTION, GLOB, NETWORK, SUBDOMAINS, Rule
from .rules import is_address as _is_address
from .rules import parse_rule as _parse_rule
from .shards import Shards

DEFAULT_CACHE_SIZE = 100_000
_BITS = {4: 32, 6: 128}
_rank = operator.attrgetter("rank")
_EMPTY: Shards[Any, Any] = Shards.of(())  # immutable, so every empty index can share it
_NO_LENGTHS: dict[int, dict[int, int]] = {4: {}, 6: {}}  # never mutated: drafts copy it


def rule_allows(rule: Rule | None, mode: str) -> bool:
    """Whether a deciding rule (or no rule) lets a name through under `mode`.

    ``block`` and ``allow`` are the same under every mode. An ``exception`` rule blocks
    under ACCEPT and allows under REJECT; no rule allows under ACCEPT and refuses under
    REJECT. Under any other mode an ``exception`` rule and no rule both allow (warning
    about the unknown mode is the caller's business, as are the federation switch and
    the local domain, which come before the rules).
    """
    if rule is None:
        return mode != REJECT
    effect = rule.effect
    if effect == EXCEPTION:
        return mode != ACCEPT
    return effect == ALLOW


def _network_key(rule: Rule) -> tuple[int, int, int]:
    network = ipaddress.ip_network(rule.text)
    bits = _BITS[network.version]
    return (
        network.version,
        network.prefixlen,
        int(network.network_address) >> (bits - network.prefixlen),
    )


def _nothing(text: str) -> None:
    return None


def _address(name: str) -> tuple[int, int] | None:
    """(IP version, integer) of an address literal, None for anything else."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    return address.version, int(address)


class Matcher:
    """An immutable set of rules, compiled for `decide`; derive changed copies cheaply."""

    __slots__ = (
        "_cache",
        "_cache_size",
        "_expiring",
        "_glob_keys",
        "_globs",
        "_net_lengths",
        "_nets",
        "_next_expiry",
        "_rules",
        "_suffix",
    )

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """An empty matcher; `build` makes one from rules."""
        self._cache: dict[str | None, Rule | None] = {}
        self._cache_size = cache_size
        self._rules: Shards[str, Rule] = _EMPTY
        self._suffix: Shards[str, Rule] = _EMPTY
        self._nets: Shards[tuple[int, int, int], Rule] = _EMPTY
        #: prefix length → how many networks have it, per IP version
        self._net_lengths: dict[int, dict[int, int]] = _NO_LENGTHS
        self._globs: Shards[tuple[str, str], tuple[Glob, ...]] = _EMPTY
        #: (head length, tail length) of bucket keys → how many globs have such a key
        self._glob_keys: dict[tuple[int, int], int] = {}
        self._expiring: Shards[str, int] = _EMPTY
        self._next_expiry: float = math.inf

    @property
    def decisions(self) -> dict[str | None, Rule | None]:
        """The decision cache (normalized name → deciding rule or None) that `decide`
        reads first and fills; a caller on the hot path may read it directly, then call
        `decide` on a miss."""
        return self._cache

    @property
    def next_expiry(self) -> float:
        """An instant (unix seconds) at or before the earliest expiry held, inf when none
        expires: once the clock passes it, swap in `current()`."""
        return self._next_expiry

    @classmethod
    def build(
        cls,
        rules: Iterable[Rule],
        now: float | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> Matcher:
        """A matcher of `rules` (canonical, as `parse_rule` makes them) unexpired at `now`
        (default: this process's clock); a later rule with the same text wins."""
        matcher = cls(cache_size).with_changes(added=rules, now=now)
        matcher._next_expiry = min(matcher._expiring.values(), default=math.inf)
        return matcher

    # -- the hot path ------------------------------------------------------------------

    def decide(self, name: str | None) -> Rule | None:
        """The rule that decides for a normalized name (as `normalize_domain` returns it:
        a host name or an address literal), or None when no rule matches."""
        try:
            return self._cache[name]
        except KeyError:
            return self._fill(name)

    def allows(self, name: str | None, mode: str) -> bool:
        """`rule_allows` of the deciding rule: the verdict under `mode`, in one call."""
        try:
            rule = self._cache[name]
        except KeyError:
            rule = self._fill(name)
        if rule is None:
            return mode != REJECT
        effect = rule.effect
        if effect == EXCEPTION:
            return mode != ACCEPT
        return effect == ALLOW

    def _fill(self, name: str | None) -> Rule | None:
        if not isinstance(name, str):
            return None
        rule = self._find(name)
        cache = self._cache
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[name] = rule
        return rule

    def _find(self, name: str) -> Rule | None:
        for rule in self._matches(name):
            return rule
        return None

    # -- explaining ----------------------------------------------------------------------

    def matched(self, name: str | None) -> list[str]:
        """The text of every rule matching a normalized name, most specific first (the
        first is the deciding rule)."""
        return [rule.text for rule in self._matches(name)] if isinstance(name, str) else []

    def _matches(self, name: str) -> Iterator[Rule]:
        """Every rule matching `name`, most specific first, lazily: deciding stops early."""
        rule = self._rules.get(name)
        if rule is not None and rule.kind == EXACT:
            yield rule
        if _is_address(name):
            yield from self._networks(name)
            return
        suffix = self._suffix
        label = name
        while True:
            rule = suffix.get(label)
            if rule is not None:
                yield rule
            dot = label.find(".")
            if dot < 0:
                break
            label = label[dot + 1 :]
        for glob in sorted(self._matching_globs(name), key=_rank):
            yield glob.rule

    def _networks(self, name: str) -> Iterator[Rule]:
        """Networks holding an address literal, longest prefix first (lazily)."""
        parsed = _address(name)
        if parsed is None:
            return
        version, value = parsed
        bits = _BITS[version]
        nets = self._nets
        for length in sorted(self._net_lengths[version], reverse=True):
            rule = nets.get((version, length, value >> (bits - length)))
            if rule is not None:
                yield rule

    def _matching_globs(self, name: str) -> list[Glob]:
        found: list[Glob] = []
        size = len(name)
        globs = self._globs
        for head, tail in self._glob_keys:
            if head + tail > size:  # a glob's head and tail never overlap in a name
                continue
            bucket = globs.get((name[:head], name[size - tail :]))
            if bucket is not None:
                found.extend(glob for glob in bucket if glob.matches(name))
        return found

    # -- the rules held ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, text: object) -> bool:
        return text in self._rules

    def get(self, text: str) -> Rule | None:
        """The unexpired rule with this canonical text, if held."""
        return self._rules.get(text)

    def rules(self) -> list[Rule]:
        """Every rule held (those unexpired when this matcher was made), by text."""
        return sorted(self._rules.values(), key=lambda rule: rule.text)

    # -- deriving --------------------------------------------------------------------------

    def with_added(self, rule: Rule, now: float | None = None) -> Matcher:
        """A matcher that also holds `rule` (replacing one with its text). A rule already
        expired at `now` (default: the clock) is held as not there: it never matches."""
        return self.with_changes(added=(rule,), now=now)

    def with_removed(self, text: str) -> Matcher:
        """A matcher without the rule of this text (any spelling `parse_rule` accepts);
        itself when it holds no such rule."""
        return self.with_changes(removed=(text,))

    def current(self, now: float | None = None) -> Matcher:
        """This matcher at `now` (default: the clock): itself before `next_expiry`, else
        a derived one without the rules expired by then, with the next instant due."""
        now = time.time() if now is None else now
        if now < self.next_expiry:
            return self
        due = [text for text, at in self._expiring.items() if at <= now]
        derived = self.with_changes(removed=due, now=now) if due else self._copy()
        derived._next_expiry = min(derived._expiring.values(), default=math.inf)
        return derived

    def with_changes(
        self, added: Iterable[Rule] = (), removed: Iterable[str] = (), now: float | None = None
    ) -> Matcher:
        """A matcher with `removed` texts dropped, then `added` rules put in, in one
        derivation (an import is one change, not thousands). Itself if nothing changes."""
        now = time.time() if now is None else now
        final: dict[str, Rule | None] = {}
        for text in removed:
            final[self._canonical(text)] = None
        for rule in added:
            final[rule.text] = None if rule.expired(now) else rule
        draft = _Draft(self)
        held = self._rules.get if len(self._rules) else _nothing
        for text, new in final.items():
            old = held(text)
            if old != new:
                if old is not None:
                    draft.index(old, remove=True)
                if new is not None:
                    draft.index(new, remove=False)
        return draft.finish() if draft.changed else self

    def _canonical(self, text: str) -> str:
        return text if text in self._rules else _parse_rule(text).text

    def _copy(self) -> Matcher:
        """The same rules under a new `next_expiry`; they share the decision cache too,
        since every answer in it still holds."""
        copy = Matcher(self._cache_size)
        for slot in Matcher.__slots__:
            setattr(copy, slot, getattr(self, slot))
        return copy


class _Draft:
    """The changes of one derivation, gathered per index, then applied copy-on-write."""

    def __init__(self, base: Matcher) -> None:
        self.base = base
        self.changed = False
        self.rules: dict[str, Rule | None] = {}
        self.suffix: dict[str, Rule | None] = {}
        self.nets: dict[tuple[int, int, int], Rule | None] = {}
        self.net_lengths: dict[int, dict[int, int]] | None = None
        self.buckets: dict[tuple[str, str], dict[str, Glob]] = {}
        self.glob_keys: dict[tuple[int, int], int] | None = None
        self.expiring: dict[str, int | None] = {}
        self.next_expiry = base._next_expiry

    def index(self, rule: Rule, *, remove: bool) -> None:
        self.changed = True
        text = rule.text
        value = None if remove else rule
        self.rules[text] = value
        if rule.expires_at is not None:
            self.expiring[text] = None if remove else rule.expires_at
            if not remove:
                self.next_expiry = min(self.next_expiry, rule.expires_at)
        if rule.kind == SUBDOMAINS:
            self.suffix[text[1:]] = value
        elif rule.kind == NETWORK:
            self._network(rule, value)
        elif rule.kind == GLOB:
            self._glob(rule, remove)

    def _network(self, rule: Rule, value: Rule | None) -> None:
        key = _network_key(rule)
        self.nets[key] = value
        if self.net_lengths is None:
            self.net_lengths = {v: dict(c) for v, c in self.base._net_lengths.items()}
        counts = self.net_lengths[key[0]]
        counts[key[1]] = counts.get(key[1], 0) + (1 if value is not None else -1)
        if counts[key[1]] == 0:
            del counts[key[1]]

    def _glob(self, rule: Rule, remove: bool) -> None:
        glob = Glob(rule)
        bucket = self.buckets.get(glob.anchor)
        if bucket is None:
            old = self.base._globs.get(glob.anchor) or ()
            bucket = self.buckets[glob.anchor] = {g.rule.text: g for g in old}
        if self.glob_keys is None:
            self.glob_keys = dict(self.base._glob_keys)
        count = self.glob_keys.get(glob.lengths, 0) + (-1 if remove else 1)
        if count:
            self.glob_keys[glob.lengths] = count
        else:
            del self.glob_keys[glob.lengths]
        if remove:
            del bucket[rule.text]
        else:
            bucket[rule.text] = glob

    def finish(self) -> Matcher:
        base = self.base
        matcher = Matcher(base._cache_size)
        matcher._rules = base._rules.evolve(self.rules)
        matcher._suffix = base._suffix.evolve(self.suffix)
        matcher._nets = base._nets.evolve(self.nets)
        matcher._net_lengths = self.net_lengths or base._net_lengths
        matcher._globs = base._globs.evolve(
            {anchor: tuple(bucket.values()) or None for anchor, bucket in self.buckets.items()}
        )
        matcher._glob_keys = base._glob_keys if self.glob_keys is None else self.glob_keys
        matcher._expiring = base._expiring.evolve(self.expiring)
        matcher._next_expiry = self.next_expiry
        return matcher
