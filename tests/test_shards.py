"""Shards: the copy-on-write map under the matcher behaves as a dict and never changes a
parent (unit)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrack_redis.policy.shards import Shards


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.integers(0, 500), st.integers(), max_size=200),
    st.lists(st.dictionaries(st.integers(0, 500), st.one_of(st.none(), st.integers())), max_size=8),
)
def test_shards_behave_as_a_dict(
    initial: dict[int, int], batches: list[dict[int, int | None]]
) -> None:
    shards = Shards.of(initial.items())
    plain = dict(initial)
    for changes in batches:
        before, parent = dict(shards.items()), shards
        shards = shards.evolve(changes)
        assert dict(parent.items()) == before  # the parent is never changed
        for key, value in changes.items():
            if value is None:
                plain.pop(key, None)
            else:
                plain[key] = value
        assert dict(shards.items()) == plain and len(shards) == len(plain)
        assert all(shards.get(key) == value for key, value in plain.items())
        assert all((key in shards) == (key in plain) for key in changes)


def test_long_runs_of_single_changes_with_tombstones_and_reshards() -> None:
    rng = random.Random(7)
    shards: Shards[str, int] = Shards.of((f"k{i}", i) for i in range(1000))
    plain = {f"k{i}": i for i in range(1000)}
    snapshots = []
    for step in range(6000):
        key = f"k{rng.randrange(3000)}"
        if rng.random() < 0.45:
            shards = shards.evolve({key: None})
            plain.pop(key, None)
        else:
            shards = shards.evolve({key: step})
            plain[key] = step
        if step % 1000 == 0:
            snapshots.append((shards, dict(plain)))
        assert len(shards) == len(plain)
        assert shards.get(key) == plain.get(key) and (key in shards) == (key in plain)
    assert dict(shards.items()) == plain and sorted(shards.values()) == sorted(plain.values())
    for old, expected in snapshots:  # every earlier version is still what it was
        assert dict(old.items()) == expected
