"""`Glob`: one glob rule made ready for matching — its anchor, its rank, its test.

A glob's ``*`` is any run of characters, dots included, ``?`` exactly one character, and
the whole name must match. Most globs are ``head*tail`` (``*.example.com``,
``mail*.example.net``), tested with two string comparisons; any other shape gets a
regular expression, compiled on first use and kept, so building a matcher of thousands
of globs compiles nothing.
"""

from __future__ import annotations

import re

from .rules import ALLOW, BLOCK, EXCEPTION, Rule, literal_count

#: The lengths a bucket key may take from a glob's literal head and tail: the longest of
#: these that fits. Few distinct lengths keep the probes per name few (at most one per
#: pair of lengths present); long ones keep the buckets small.
ANCHOR_LENGTHS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24)
#: Among equally specific globs: block, then exception, then allow.
EFFECT_RANK = {BLOCK: 0, EXCEPTION: 1, ALLOW: 2}


def _fit(length: int) -> int:
    return max(n for n in ANCHOR_LENGTHS if n <= length)


class Glob:
    """A compiled glob: its bucket key, its precedence rank, and a match test.

    The bucket key is (the first h characters, the last t characters) of the name the
    glob can match, h and t taken from `ANCHOR_LENGTHS` to fit the literal text before
    the first wildcard and after the last one. A name probes one bucket per (h, t)
    present, so it meets only the globs that agree with both its ends.
    """

    __slots__ = (
        "anchor",
        "head",
        "lengths",
        "min_length",
        "rank",
        "regex",
        "rule",
        "simple",
        "tail",
    )

    def __init__(self, rule: Rule) -> None:
        text = rule.text
        self.rule = rule
        self.rank = (-literal_count(text), EFFECT_RANK[rule.effect], text)
        first = min(i for i in (text.find("*"), text.find("?")) if i >= 0)
        last = max(text.rfind("*"), text.rfind("?"))
        self.head, self.tail = text[:first], text[last + 1 :]
        # head*tail with nothing else: two string tests instead of a regular expression
        self.simple = first == last and text[first] == "*"
        self.min_length = len(self.head) + len(self.tail)
        self.regex: re.Pattern[str] | None = None  # compiled on first use, then kept
        h, t = _fit(len(self.head)), _fit(len(self.tail))
        self.lengths = (h, t)
        self.anchor = (self.head[:h], self.tail[len(self.tail) - t :])

    def matches(self, name: str) -> bool:
        if self.simple:
            return (
                len(name) >= self.min_length
                and name.startswith(self.head)
                and name.endswith(self.tail)
            )
        if self.regex is None:
            pattern = "".join(
                ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in self.rule.text
            )
            self.regex = re.compile(pattern, re.DOTALL)
        return self.regex.fullmatch(name) is not None
