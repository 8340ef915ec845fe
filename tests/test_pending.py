"""pending.ShardQueues: per-shard pending deltas and sealed chunks of one worker (unit)."""

from __future__ import annotations

from fedtrack_redis.batch import Recorder, take_batch
from fedtrack_redis.keys import NamespaceKeys, shard_of
from fedtrack_redis.pending import CHUNK_DOMAINS, CHUNK_WRITES, ShardQueues
from fedtrack_redis.stats import bucket_of

KEYS = NamespaceKeys("ns")


def queues_with(events: int, domains: int) -> tuple[Recorder, ShardQueues]:
    recorder = Recorder()
    queues = ShardQueues(recorder, KEYS, "w1", lease_ttl=30)
    for index in range(events):
        recorder.record_failure(f"d{index % domains}.example", "SMTP")
    batch = take_batch(recorder)
    assert batch is not None
    queues.absorb(batch)
    return recorder, queues


def lines(chunk: object) -> list[str]:
    return [line for line in chunk.args[4].split("\n") if line]  # type: ignore[attr-defined]


def test_deltas_of_one_domain_merge_and_land_in_its_shard() -> None:
    _recorder, queues = queues_with(events=30, domains=3)
    heads = queues.heads()
    by_domain = {
        line.split("|")[0]: (chunk.shard, line) for chunk in heads for line in lines(chunk)
    }
    assert set(by_domain) == {"d0.example", "d1.example", "d2.example"}
    for domain, (shard, line) in by_domain.items():
        assert shard == shard_of(domain)
        assert line.split("|")[2].split(",")[2] == "10"  # failed_smtp: ten, merged


def test_a_chunk_holds_at_most_its_domains_and_writes() -> None:
    _recorder, queues = queues_with(events=5_000, domains=5_000)
    sizes: list[int] = []
    while heads := queues.heads():
        for chunk in heads:
            assert chunk.domains <= CHUNK_DOMAINS
            sizes.append(chunk.domains)
            queues.acknowledged(chunk, applied=True, lease_absent=False)
    assert sum(sizes) == 5_000
    assert CHUNK_WRITES >= 12 * CHUNK_DOMAINS / 2  # heavy rows split by writes, not domains


def test_sequence_numbers_increase_per_shard_and_a_sealed_chunk_is_kept_until_acked() -> None:
    recorder, queues = queues_with(events=200, domains=200)
    first = {chunk.shard: chunk for chunk in queues.heads()}
    again = {chunk.shard: chunk for chunk in queues.heads()}
    assert {s: c.seq for s, c in again.items()} == {s: c.seq for s, c in first.items()}
    assert all(again[s] is first[s] for s in first)  # not acknowledged: the same chunk
    for chunk in first.values():
        queues.acknowledged(chunk, applied=True, lease_absent=False)
    recorder.record_failure("d0.example", "SMTP")
    batch = take_batch(recorder)
    assert batch is not None
    queues.absorb(batch)
    (nxt,) = queues.heads()
    assert nxt.seq > first[nxt.shard].seq


def test_renumber_puts_every_sealed_chunk_above_the_stored_seq() -> None:
    _recorder, queues = queues_with(events=400, domains=400)
    head = next(iter(queues.heads()))
    queues.seal_ahead([head])
    state = queues.shards[head.shard]
    sealed = list(state.sealed)
    stored = head.seq + 10**9
    queues.renumber(head.shard, stored)
    assert [chunk.seq for chunk in sealed] == list(range(stored + 1, stored + 1 + len(sealed)))
    assert all(chunk.args[1] == str(chunk.seq) for chunk in sealed)
    assert state.seq == sealed[-1].seq


def test_heartbeats_keep_a_lease_of_in_flight_messages() -> None:
    recorder = Recorder()
    queues = ShardQueues(recorder, KEYS, "w1", lease_ttl=0.3)
    recorder.increment_queue("a.example")
    batch = take_batch(recorder)
    assert batch is not None
    queues.absorb(batch)
    (chunk,) = queues.heads()
    queues.acknowledged(chunk, applied=True, lease_absent=True)
    # The lease was absent: every count it does not hold now goes again; this chunk's
    # own count is held, so nothing is re-sent for it.
    (reasserted,) = queues.heads()
    assert reasserted.queued == {}
    queues.acknowledged(reasserted, applied=True, lease_absent=False)
    assert not queues.heads()
    state = queues.shards[chunk.shard]
    state.last_ack -= 1.0  # a third of the lease TTL has passed
    queues.plan_heartbeats()
    (beat,) = queues.heads()
    assert beat.domains == 0 and beat.shard == chunk.shard  # an empty chunk: lease renewed


def sealed_lines(queues: ShardQueues, recorder: Recorder) -> dict[str, str]:
    """Swap, absorb and seal every shard; domain → its chunk line."""
    batch = take_batch(recorder)
    if batch is not None:
        queues.absorb(batch)
    lines: dict[str, str] = {}
    for chunk in queues.heads():
        queues.acknowledged(chunk, applied=True, lease_absent=False)
        for line in chunk.args[4].split("\n"):
            if line:
                lines[line.split("|")[0]] = line
    return lines


def test_an_unchanged_in_flight_count_is_not_sent_again() -> None:
    recorder = Recorder()
    queues = ShardQueues(recorder, NamespaceKeys("ns"), "w1", lease_ttl=30)
    recorder.increment_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == "1"
    recorder.increment_queue("a.example")  # queued and delivered within one interval
    recorder.decrement_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == ""  # still 1
    recorder.decrement_queue("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == "0"
    recorder.touch("a.example")
    assert sealed_lines(queues, recorder)["a.example"].split("|")[1] == ""


def test_a_lost_lease_makes_the_shard_send_every_count_again() -> None:
    recorder = Recorder()
    keys = NamespaceKeys("ns")
    queues = ShardQueues(recorder, keys, "w1", lease_ttl=30)
    for domain in ("a.example", "b.example", "c.example"):
        recorder.increment_queue(domain)
    sealed_lines(queues, recorder)
    recorder.touch("a.example")
    batch = take_batch(recorder)
    assert batch is not None
    queues.absorb(batch)
    shard = keys.shard_for("a.example").shard
    (chunk,) = [c for c in queues.heads() if c.shard == shard]
    queues.acknowledged(chunk, applied=True, lease_absent=True)
    resent = {
        line.split("|")[0]: line.split("|")[1]
        for c in queues.heads()
        for line in c.args[4].split("\n")
        if line
    }
    same_shard = {
        d for d in ("a.example", "b.example", "c.example") if keys.shard_for(d).shard == shard
    }
    assert resent == dict.fromkeys(same_shard, "1")


def test_every_latency_bucket_of_a_row_reaches_its_line() -> None:
    recorder = Recorder()
    queues = ShardQueues(recorder, KEYS, "w1", lease_ttl=30)
    for latency in (3, 3, 40, 700, 700, 700, 9000):  # three inline buckets and one more
        recorder.record_success("a.example", latency, "HTTPS")
    histogram = sealed_lines(queues, recorder)["a.example"].split("|")[3]
    counts = dict(item.split(":") for item in histogram.split(","))
    assert {int(b): int(c) for b, c in counts.items()} == {
        bucket_of(3): 2,
        bucket_of(40): 1,
        bucket_of(700): 3,
        bucket_of(9000): 1,
    }
