"""`Shards`: an immutable map whose changed copies share all but the shards they touch.

The rule matcher is swapped whole on every rule change, so readers never lock. Copying
a dict of 100,000 rules per change would make a burst of single adds quadratic; here a
change copies one shard (about √n entries) and the list of shard references (about √n
pointers), so it costs O(√n) and everything else is shared with the parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")

_MIN_BITS = 3


def _bits_for(size: int) -> int:
    """Shard count 2**bits close to √size, so a copied shard and the shard list are alike."""
    bits = _MIN_BITS
    while (1 << (2 * bits)) < size:
        bits += 1
    return bits


class Shards(Generic[K, V]):
    """A read-only mapping split by key hash; `evolve` returns a changed copy.

    A deleted key stays in its shard with the value None (a tombstone) until the next
    re-shard: CPython copies a dict without holes much faster than one with, and a run
    of single deletions copies what the previous one left.
    """

    __slots__ = ("_dead", "_mask", "_parts", "_size")

    def __init__(self, parts: list[dict[K, V | None]], size: int, dead: int = 0) -> None:
        self._parts = parts
        self._mask = len(parts) - 1
        self._size = size
        self._dead = dead

    @classmethod
    def of(cls, items: Iterable[tuple[K, V]]) -> Shards[K, V]:
        """A map of `items` (a later key wins), sharded for its size."""
        merged = dict(items)
        parts: list[dict[K, V | None]] = [{} for _ in range(1 << _bits_for(len(merged)))]
        mask = len(parts) - 1
        for key, value in merged.items():
            parts[hash(key) & mask][key] = value
        return cls(parts, len(merged))

    def get(self, key: K) -> V | None:
        return self._parts[hash(key) & self._mask].get(key)

    def __contains__(self, key: object) -> bool:
        return self._parts[hash(key) & self._mask].get(cast(K, key)) is not None

    def __len__(self) -> int:
        return self._size

    def items(self) -> Iterator[tuple[K, V]]:
        for part in self._parts:
            for key, value in part.items():
                if value is not None:
                    yield key, value

    def values(self) -> Iterator[V]:
        for part in self._parts:
            for value in part.values():
                if value is not None:
                    yield value

    def evolve(self, changes: Mapping[K, V | None]) -> Shards[K, V]:
        """A copy with `changes` applied: a value sets its key, None deletes it.

        Copies only the shards the changes fall in; re-shards (one full copy) when the map
        has grown four-fold past its shard count or holds more tombstones than keys, which
        keeps the amortized cost of a long run of single changes at O(√n) each.
        """
        if not changes:
            return self
        size = self._size
        bits = self._mask.bit_length()
        if len(changes) * 2 > size or size + len(changes) > 4 << (2 * bits) or self._dead > size:
            merged = dict(self.items())
            for key, value in changes.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            return Shards.of(merged.items())
        parts = list(self._parts)
        mask = self._mask
        copied: set[int] = set()
        dead = self._dead
        for key, value in changes.items():
            index = hash(key) & mask
            if index not in copied:
                parts[index] = dict(parts[index])
                copied.add(index)
            part = parts[index]
            old = part.get(key)
            if value is None:
                if old is not None:
                    part[key] = None
                    size -= 1
                    dead += 1
            else:
                if old is None:
                    size += 1
                    if key in part:
                        dead -= 1
                part[key] = value
        return Shards(parts, size, dead)
