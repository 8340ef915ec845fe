"""Run every performance measurement, each beside its baseline, and publish the results.

    .venv/bin/python -m benchmarks            # full run (< 10 min): writes benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks --quick    # seconds: checks the suite works (CI)

Writes ``RESULTS.md``, ``results.json`` and the plots (``throughput.png``,
``propagation.png``) into ``--output`` (default: ``benchmarks/`` for a full run, a new
temporary directory for ``--quick``, which never overwrites the published results).
Redis is a throwaway ``redis-server`` started for the run unless
``FEDTRACK_BENCH_REDIS_URL`` or ``--redis-url`` names one; PostgreSQL is the local
server (``FEDTRACK_BENCH_DATABASE_URL``), in scratch databases dropped afterwards.

Exit status: 1 when a correctness check failed (exact totals and the like) or a section
could not run; a missed timing target never fails the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    bench_cluster,
    bench_engines,
    bench_flusher,
    bench_health,
    bench_history,
    bench_policy,
    bench_propagation,
    bench_qshape,
    bench_rules,
    bench_size,
    bench_tracker,
)
from benchmarks.common import Env, bench_env, machine_facts
from benchmarks.report import Report, summary_table

HERE = Path(__file__).resolve().parent


def memory(env: Env, report: Report) -> None:
    bench_tracker.bench_memory(env, report)
    bench_tracker.bench_pending(env, report)


def rules(env: Env, report: Report) -> None:
    bench_rules.run(env, report)  # the matcher alone (pure Python)
    bench_policy.run(env, report)  # through a real store


SECTIONS: dict[str, Callable[[Env, Report], None]] = {
    "hot-path": bench_tracker.bench_hot_path,
    "push": bench_tracker.bench_push,
    "memory": memory,
    "cluster": bench_cluster.run,
    "propagation": bench_propagation.run,
    "flusher": bench_flusher.run,
    "rules": rules,
    "engines": bench_engines.run,
    "health": bench_health.run,
    "qshape": bench_qshape.run,
    "history": bench_history.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--output", type=Path, help="directory for RESULTS.md and the rest")
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway server")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only these sections (repeatable); the report then holds only them",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="instead, the size run: 10,000 domains, then x10 up to N (e.g. 1000000);"
        " writes benchmarks/size/ unless --output",
    )
    options = parser.parse_args(argv)
    if options.size:
        return size_run(options)
    # Only a full run of every section publishes (benchmarks/RESULTS.md).
    partial = options.quick or options.only
    output: Path = options.output or (
        Path(tempfile.mkdtemp(prefix="fedtrack-bench-")) if partial else HERE
    )
    if options.quick and output.resolve() == HERE:
        parser.error("--quick never writes the published results: choose another --output")
    report = Report(options.quick)
    started = time.monotonic()
    with bench_env(options.quick, options.redis_url) as env:
        report.meta.update(machine_facts(env))
        print(
            f"fedtrack-redis benchmarks{' (quick)' if options.quick else ''}: {report.meta['cpu']},"
            f" {report.meta['cores']} cores; {report.meta['redis']}; {report.meta['postgresql']}",
            flush=True,
        )
        for name, section in SECTIONS.items():
            if options.only and name not in options.only:
                continue
            print(f"== {name}", flush=True)
            section_started = time.monotonic()
            try:
                section(env, report)
            except Exception as exc:  # report it, run the rest, fail at the end
                traceback.print_exc()
                report.errors[name] = f"{type(exc).__name__}: {exc}"
            report.meta.setdefault("section_seconds", {})[name] = round(
                time.monotonic() - section_started, 1
            )
    written = report.write(output)
    print()
    print("\n".join(summary_table(report)))
    print()
    failed = report.failed_checks
    print(
        f"{len(report.checks) - len(failed)} of {len(report.checks)} correctness checks passed"
        f" in {time.monotonic() - started:.0f} s; wrote {', '.join(str(p) for p in written)}"
    )
    for check in failed:
        print(f"FAILED: [{check.section}] {check.name}: {check.detail}")
    for name, error in report.errors.items():
        print(f"ERROR in {name}: {error}")
    return 1 if failed or report.errors else 0


def size_run(options: argparse.Namespace) -> int:
    """The separate, longer run of `bench_size` (a million domains take minutes)."""
    sizes: list[int] = []
    count = 10_000
    while count <= options.size:
        sizes.append(count)
        count *= 10
    output: Path = options.output or HERE / "size"
    report = Report(False)
    with bench_env(False, options.redis_url) as env:
        report.meta.update(machine_facts(env))
        try:
            bench_size.run(env, report, tuple(sizes))
        except Exception as exc:
            traceback.print_exc()
            report.errors["size"] = f"{type(exc).__name__}: {exc}"
    written = report.write(output)
    print("\n".join(summary_table(report)))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 1 if report.failed_checks or report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
