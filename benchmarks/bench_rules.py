"""The rule matcher's figures: the per-call decision with 10,000 and 100,000 mixed rules,
and the cost of changing the rules, each beside a baseline of the same run.

    .venv/bin/python -m benchmarks.bench_rules [--quick]

* hot path: median ns per decision over batches of about 2,000 distinct raw spellings
  (mostly matching no rule, some matching each kind), going from the caller's spelling
  to the normalized name through the memo as `check_federation_policy` does, then
  `Matcher.allows`; beside a plain set lookup of the same spellings and beside a plain
  loop over every rule in precedence order (the ratio says what the indexes buy). The
  decision cache is warm, as in a worker; the uncached decision is reported too.
* changes: a burst of 10,000 single `with_added` derivations on top of each rule set,
  and the same burst of `with_removed`, beside one full `Matcher.build`.

Pure Python, no Redis and no PostgreSQL: ``--redis-url`` is not needed.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import ipaddress
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import Env, median
from benchmarks.report import Report, summary_table
from fedtrack_redis.domain import DEFAULT_MEMO, memo_lookup
from fedtrack_redis.policy.matcher import Matcher
from fedtrack_redis.policy.rules import EFFECTS, Rule, is_address, literal_count, make_rule

SECTION = "rules"
TARGETS_NS = {10_000: 300, 100_000: 500}
BURST = 10_000


def mixed_rules(count: int, rng: random.Random) -> list[Rule]:
    """70 % exact, 20 % subdomains, 5 % globs (three shapes), 5 % networks (v4 and v6)."""
    rules = []
    for i in range(count):
        effect = rng.choice(EFFECTS)
        slot = i % 20
        if slot < 14:
            text = f"blocked{i}.example.net"
        elif slot < 18:
            text = f".sub{i}.example.org"
        elif slot == 18:
            shape = (i // 20) % 3
            text = (f"*.g{i}.example", f"mx{i}-*.example.com", f"relay{i}?.*")[shape]
        elif (i // 20) % 2:
            text = f"10.{(i >> 8) & 255}.{i & 255}.0/24"
        else:
            text = f"2001:db8:{i & 0xFFFF:x}::/48"
        rules.append(make_rule(text, effect=effect))
    return rules


def raw_names(rules: list[Rule], count: int, rng: random.Random) -> list[str]:
    """Caller spellings: 80 % matching no rule, the rest matching one kind each."""
    kinds: dict[str, list[Rule]] = {}
    for rule in rules:
        kinds.setdefault(rule.kind, []).append(rule)
    names = []
    for i in range(count):
        pick = i % 20
        if pick < 16:
            names.append(
                f"[10.200.{i & 255}.{i >> 8}]" if pick == 15 else f"host{i}.allowed.example"
            )
            continue
        kind = ("exact", "subdomains", "glob", "network")[pick - 16]
        rule = rng.choice(kinds[kind])
        text = rule.text
        if kind == "exact":
            names.append(text.upper() if i % 2 else text)
        elif kind == "subdomains":
            names.append(f"mail.{text[1:]}")
        elif kind == "glob":
            names.append(text.replace("*", "x1").replace("?", "q") + ("." if i % 2 else ""))
        else:
            network = ipaddress.ip_network(text)
            address = network.network_address + 7
            names.append(f"[IPv6:{address}]" if network.version == 6 else str(address))
    return names


Compiled = list[tuple[Rule, Any]]


def compile_reference(rules: list[Rule]) -> Compiled:
    """Each rule with its network or glob pattern parsed once, for a fair plain loop."""
    compiled: Compiled = []
    for rule in rules:
        if rule.kind == "network":
            compiled.append((rule, ipaddress.ip_network(rule.text)))
        elif rule.kind == "glob":
            compiled.append((rule, re.compile(fnmatch.translate(rule.text))))
        else:
            compiled.append((rule, None))
    return compiled


def reference(compiled: Compiled, name: str) -> Rule | None:
    """The deciding rule by a plain loop over every rule, in precedence order."""
    best: tuple[tuple[int, int, int, str], Rule] | None = None
    address = ipaddress.ip_address(name) if is_address(name) else None
    for rule, extra in compiled:
        text, kind = rule.text, rule.kind
        rank: tuple[int, int, int, str] | None = None
        if kind == "exact":
            if text == name:
                rank = (0, 0, 0, text)
        elif kind == "subdomains":
            if address is None and (name == text[1:] or name.endswith(text)):
                rank = (1, -len(text), 0, text)
        elif kind == "network":
            if address is not None and address.version == extra.version and address in extra:
                rank = (2, -extra.prefixlen, 0, text)
        elif address is None and extra.match(name):
            effect = ("block", "exception", "allow").index(rule.effect)
            rank = (3, -literal_count(text), effect, text)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, rule)
    return best[1] if best else None


def batch_ns(loop: Callable[[], None], batches: int, size: int) -> float:
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        loop()
        samples.append((time.perf_counter_ns() - start) / size)
    return median(samples)


def bench_decisions(env: Env, report: Report, count: int) -> None:
    rng = random.Random(count)
    rules = mixed_rules(count, rng)
    raws = raw_names(rules, 2_000, rng)
    start = time.perf_counter()
    matcher = Matcher.build(rules)
    build_s = time.perf_counter() - start
    for raw in raws:  # the memo knows every spelling, as in a worker that has run a while
        DEFAULT_MEMO.get(raw)
    names: list[str] = [DEFAULT_MEMO.require(raw) for raw in raws]
    compiled = compile_reference(rules)
    # Every name at 10,000 rules, one in seven at 100,000 (the plain loop is slow), a third
    # of that quick; steps prime to 20, so every kind of name is in the sample.
    sample = names[:: (1 if count <= 10_000 else 7) * (3 if env.quick else 1)]
    wrong = [name for name in sample if matcher.decide(name) != reference(compiled, name)]
    report.check(
        SECTION,
        f"matcher decides as the plain loop ({count:,} rules, {len(sample):,} names)",
        not wrong,
        f"{len(wrong)} names differ" + (f", e.g. {wrong[0]}" if wrong else ""),
    )
    allows = matcher.allows
    find = matcher._find  # the decision without the cache: what a first sighting costs
    rule_set = {rule.text for rule in rules}

    def hot() -> None:
        for raw in raws:
            name = memo_lookup(raw)
            if name.__class__ is not str:
                name = DEFAULT_MEMO.get(raw)
            allows(name, "ACCEPT")

    def set_lookup() -> None:
        for raw in raws:
            raw in rule_set  # noqa: B015

    def uncached() -> None:
        for name in names:
            find(name)

    timed = sample[:: max(1, len(sample) // 100)]

    def plain_loop() -> None:
        for name in timed:
            reference(compiled, name)

    batches = 50 if env.quick else 400
    gc.collect()
    hot()
    hot_ns = batch_ns(hot, batches, len(raws))
    set_ns = batch_ns(set_lookup, batches, len(raws))
    cold_ns = batch_ns(uncached, max(5, batches // 20), len(names))
    loop_ns = batch_ns(plain_loop, 3, len(timed))
    report.figure(
        SECTION,
        f"rule decision median per call ({count:,} mixed rules)",
        hot_ns,
        "ns",
        target=("<=", TARGETS_NS[count]),
        baseline=(
            f"plain set lookup {set_ns:.0f} ns; plain loop over every rule"
            f" {loop_ns / 1000:,.0f} µs = {loop_ns / hot_ns:,.0f}x the matcher"
        ),
        note=(
            f"memo lookup + `Matcher.allows` over {len(raws):,} distinct spellings (80 %"
            " matching no rule), median of"
            f" {batches} batches, decision cache warm. Uncached decision (index walk):"
            f" {cold_ns:,.0f} ns. `Matcher.build`: {build_s * 1000:,.0f} ms."
        ),
    )
    report.series.setdefault("rules_ns", {})[str(count)] = {
        "hot": hot_ns,
        "set": set_ns,
        "uncached": cold_ns,
        "plain_loop": loop_ns,
        "build_ms": build_s * 1000,
    }
    bench_burst(env, report, matcher, count, build_s)


def bench_burst(env: Env, report: Report, matcher: Matcher, count: int, build_s: float) -> None:
    burst = BURST // 10 if env.quick else BURST
    extra = [make_rule(f"burst{i}.example.info", effect="block") for i in range(burst)]
    extra[::20] = [make_rule(f"*.burst{i}.example", effect="block") for i in range(0, burst, 20)]
    gc.collect()
    start = time.perf_counter()
    grown = matcher
    for rule in extra:
        grown = grown.with_added(rule)
    add_s = time.perf_counter() - start
    start = time.perf_counter()
    shrunk = grown
    for rule in extra:
        shrunk = shrunk.with_removed(rule.text)
    remove_s = time.perf_counter() - start
    report.check(
        SECTION,
        f"burst of {burst:,} adds then removes returns to {count:,} rules",
        len(grown) == count + burst and len(shrunk) == count,
        f"{len(grown):,} after the adds, {len(shrunk):,} after the removes",
    )
    report.figure(
        SECTION,
        f"burst of {burst:,} single adds onto {count:,} rules",
        add_s * 1000,
        "ms",
        baseline=(
            f"one full Matcher.build of {count:,} rules {build_s * 1000:,.0f} ms"
            f" (a rebuild per add: {build_s * burst:,.0f} s)"
        ),
        note=(
            f"{add_s / burst * 1e6:,.1f} µs per `with_added`; the same burst of"
            f" `with_removed`: {remove_s * 1000:,.0f} ms ({remove_s / burst * 1e6:,.1f} µs"
            " each)."
        ),
    )


def run(env: Env, report: Report) -> None:
    for count in TARGETS_NS:
        bench_decisions(env, report, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, a smaller burst")
    options = parser.parse_args()
    report = Report(options.quick)
    run(Env("", "", options.quick, own_redis=False), report)
    print("\n".join(summary_table(report)))
    for figure in report.figures:
        print(f"\n{figure.name}: {figure.note}")
    sys.exit(1 if report.failed_checks else 0)


if __name__ == "__main__":
    main()
