"""Collect the figures of one benchmark run and write them: Markdown, JSON and plots.

A `Report` holds `Figure`s (a measured value, its target when it has one, and the
baseline or peer measured beside it in the same run), `Check`s (correctness: exact
totals and the like; a failed check makes the run exit non-zero) and the raw series the
plots are drawn from. Timing never fails a run; a missed target is reported as a miss.
"""

from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Sections in the order the summary table shows them.
SECTIONS = (
    "hot path",
    "push",
    "cluster",
    "propagation",
    "flusher",
    "memory",
    "rules",
    "engines",
    "qshape",
    "health",
    "history",
    "size",
)


def _sections(report: Report) -> list[str]:
    """`SECTIONS`, then any other section of the run (none is ever left out)."""
    others = [f.section for f in report.figures if f.section not in SECTIONS]
    return [*SECTIONS, *dict.fromkeys(others)]


@dataclass
class Figure:
    """One measured figure, with its target (if any) and what it is compared with."""

    section: str
    name: str
    value: float
    unit: str
    #: The target as text (``"≤ 500 ns"``), or "" for a figure without one.
    target: str = ""
    #: True when the target is met, False when missed, None without a target.
    passed: bool | None = None
    #: The baseline or peer measured in the same run, as text.
    baseline: str = ""
    #: Anything a reader needs to interpret the figure (what bounds a miss, the workload).
    note: str = ""
    #: Shown in the summary table (False: only in the section details).
    headline: bool = True

    def shown(self) -> str:
        return format_value(self.value, self.unit)


@dataclass
class Check:
    """A correctness check run inside a benchmark (exact totals, no double counting)."""

    section: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    quick: bool
    started: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: Raw data for the plots and the JSON file (name → anything JSON-serializable).
    series: dict[str, Any] = field(default_factory=dict)
    #: Sections that raised, with the error (the run then exits non-zero).
    errors: dict[str, str] = field(default_factory=dict)

    # -- recording -----------------------------------------------------------------------

    def figure(
        self,
        section: str,
        name: str,
        value: float,
        unit: str,
        *,
        target: tuple[str, float] | None = None,
        baseline: str = "",
        note: str = "",
        headline: bool = True,
    ) -> Figure:
        """Record a figure; `target` is ``("<=", limit)`` or ``(">=", limit)`` in `unit`."""
        text, passed = "", None
        if target is not None:
            sign, limit = target
            compare: Callable[[float, float], bool] = operator.le if sign == "<=" else operator.ge
            passed = bool(compare(value, limit))
            text = f"{'≤' if sign == '<=' else '≥'} {format_value(limit, unit)}"
        figure = Figure(section, name, value, unit, text, passed, baseline, note, headline)
        self.figures.append(figure)
        print(
            f"  [{section}] {name}: {figure.shown()}"
            + (f" (target {text}: {_verdict(passed)})" if text else "")
            + (f"; {baseline}" if baseline else ""),
            flush=True,
        )
        return figure

    def check(self, section: str, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(section, name, bool(ok), detail))
        print(f"  [{section}] check {name}: {'ok' if ok else 'FAILED'} {detail}", flush=True)
        return ok

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    # -- writing -------------------------------------------------------------------------

    def write(self, directory: Path) -> list[Path]:
        """Write RESULTS.md, results.json and the plots into `directory`; return the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        self.meta["duration_s"] = round(time.time() - self.started, 1)
        written = []
        plots = _plots(self, directory)
        written += plots
        markdown = directory / "RESULTS.md"
        markdown.write_text(render_markdown(self, [p.name for p in plots]), encoding="utf-8")
        written.append(markdown)
        data = directory / "results.json"
        data.write_text(json.dumps(self.as_json(), indent=1, sort_keys=False) + "\n", "utf-8")
        written.append(data)
        return written

    def as_json(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "meta": self.meta,
            "figures": [asdict(figure) for figure in self.figures],
            "checks": [asdict(check) for check in self.checks],
            "errors": self.errors,
            "series": self.series,
        }


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else ("pass" if passed else "MISS")


def format_value(value: float, unit: str) -> str:
    """A figure as a reader wants it: thousands separators, sensible decimals."""
    if math.isnan(value):
        return "n/a"
    if unit in ("events/s", "field updates/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ns":
        return f"{value:,.0f} ns"
    if unit in ("ms",):
        return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "x":
        return f"{value:,.1f}x"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "":
        return f"{value:,.0f}"
    return f"{value:,.3g} {unit}"


def render_markdown(report: Report, plots: list[str]) -> str:
    meta = report.meta
    lines = ["# fedtrack-redis benchmark results", ""]
    mode = "quick mode (small sizes: checks that the suite works, figures not comparable)"
    lines += [
        f"Generated by `python -m benchmarks{' --quick' if report.quick else ''}`"
        f" on {meta.get('date', '?')} in {meta.get('duration_s', '?')} s"
        + (f", {mode}" if report.quick else "")
        + ". Every figure is measured beside its baseline or peer in the same run, on the"
        " machine below, against a real Redis and a real PostgreSQL"
        " (targets: the README's performance table; a timing miss is reported, never hidden).",
        "",
        "| machine | |",
        "|---|---|",
    ]
    for key in ("cpu", "cores", "memory", "kernel", "redis", "postgresql"):
        if key in meta:
            lines.append(f"| {key} | {meta[key]} |")
    versions = meta.get("versions", {})
    if versions:
        lines.append(
            "| versions | "
            + ", ".join(f"{name} {version}" for name, version in versions.items())
            + " |"
        )
    lines.append("")
    lines += ["## Summary against the targets", ""]
    lines += summary_table(report)
    lines.append("")
    failed = report.failed_checks
    lines += ["## Correctness checks (exact totals)", ""]
    lines.append(
        f"{len(report.checks) - len(failed)} of {len(report.checks)} passed."
        + (" **FAILED: " + "; ".join(c.name for c in failed) + "**" if failed else "")
    )
    lines += ["", "| section | check | result | detail |", "|---|---|---|---|"]
    for check in report.checks:
        verdict = "pass" if check.ok else "**FAIL**"
        lines.append(f"| {check.section} | {check.name} | {verdict} | {check.detail} |")
    if report.errors:
        lines += ["", "Sections that failed to run:", ""]
        lines += [f"- {section}: `{error}`" for section, error in report.errors.items()]
    lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
        lines.append("")
    lines += ["## Every figure, with notes", ""]
    for section in _sections(report):
        figures = [f for f in report.figures if f.section == section]
        if not figures:
            continue
        lines += [f"### {section}", ""]
        for figure in figures:
            target = (
                f" (target {figure.target}: {_verdict(figure.passed)})" if figure.target else ""
            )
            lines.append(f"- **{figure.name}**: {figure.shown()}{target}.")
            if figure.baseline:
                lines.append(f"  Same run: {figure.baseline}.")
            if figure.note:
                lines.append(f"  {figure.note}")
        lines.append("")
    lines += [
        "## Reproduce",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[bench]'",
        ".venv/bin/python -m benchmarks            # full run (< 10 min), writes this file",
        ".venv/bin/python -m benchmarks --quick    # seconds; writes to a temporary directory",
        "```",
        "",
        "Redis is a throwaway `redis-server` started by the run (so its memory and command"
        " statistics are the benchmark's alone); PostgreSQL is the local server, in scratch"
        " databases dropped afterwards (`FEDTRACK_BENCH_REDIS_URL`,"
        " `FEDTRACK_BENCH_DATABASE_URL` to point elsewhere).",
        "",
    ]
    return "\n".join(lines)


def summary_table(report: Report) -> list[str]:
    rows = ["| section | figure | measured | target | result | baseline / peer (same run) |"]
    rows.append("|---|---|---|---|---|---|")
    for section in _sections(report):
        for figure in report.figures:
            if figure.section != section or not figure.headline:
                continue
            rows.append(
                f"| {section} | {figure.name} | {figure.shown()} | {figure.target or '-'} |"
                f" {_verdict(figure.passed) or '-'} | {figure.baseline or '-'} |"
            )
    return rows


# -- plots ------------------------------------------------------------------------------


def _plots(report: Report, directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    written = []
    scaling = report.series.get("cluster_scaling")
    if scaling:
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for label, style in (
            ("fedtrack-redis", "o-"),
            ("naive HINCRBY per event", "s--"),
        ):
            points = scaling.get(label)
            if points:
                workers = [p[0] for p in points]
                axis.plot(workers, [p[1] for p in points], style, label=label)
        target = scaling.get("target")
        if target:
            axis.axhline(
                target, color="grey", linestyle=":", label=f"target {target:,.0f}/s (4 workers)"
            )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        axis.set_xlabel("worker processes (2 cores)")
        axis.set_ylabel("recorded events/s, all workers")
        axis.set_title("Cluster throughput against worker count")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
        written.append(_save(plt, figure, directory / "throughput.png"))
    propagation = report.series.get("propagation")
    if propagation:
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for label, style, color in (
            ("idle", "-", "tab:blue"),
            ("busy", "-", "tab:orange"),
            ("raw PUBLISH idle", ":", "tab:blue"),
            ("raw PUBLISH busy", ":", "tab:orange"),
        ):
            samples = propagation.get(label)
            if not samples:
                continue
            ordered = sorted(samples)
            n = len(ordered)
            axis.plot(
                ordered,
                [(i + 1) / n for i in range(n)],
                style,
                color=color,
                label=f"{label} (n={n})",
            )
        axis.axvline(10, color="tab:blue", linestyle="--", alpha=0.5, label="target idle p99 10 ms")
        axis.axvline(
            25, color="tab:orange", linestyle="--", alpha=0.5, label="target busy p99 25 ms"
        )
        axis.axhline(0.99, color="grey", linestyle=":", alpha=0.6)
        axis.set_xscale("log")
        axis.set_xlabel("add_rule start → visible in a process (ms)")
        axis.set_ylabel("fraction of (change, process) samples")
        axis.set_title("Policy propagation to 8 processes (CDF)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
        written.append(_save(plt, figure, directory / "propagation.png"))
    sizes = report.series.get("size")
    if sizes and len(sizes) > 1:
        figure, (costs, reads) = plt.subplots(1, 2, figsize=(11, 4.2))
        domains = [row["domains"] for row in sizes]
        for name, label in (("flush_s", "flush, every domain changed"), ("hydrate_s", "hydrate")):
            costs.plot(domains, [row[name] for row in sizes], "o-", label=label)
        costs.plot(
            domains, [d / 100_000 for d in domains], ":", color="grey", label="1 s per 100,000"
        )
        costs.set_ylabel("seconds")
        costs.set_title("May grow (linearly): flush and hydrate")
        for name, label in (
            ("page_p99_ms", "/servers?limit=50 p99"),
            ("status_p99_ms", "/status p99"),
            ("search_p99_ms", "name filter (prefix) p99"),
            ("search_suffix_p99_ms", "name filter (label suffix) p99"),
            ("full_scan_ms", "reading every domain (the old way)"),
        ):
            points = [(row["domains"], row[name]) for row in sizes if name in row]
            reads.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
        reads.set_ylabel("milliseconds")
        reads.set_title("Must stay flat: pages, status, name filter")
        for axis in (costs, reads):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("domains")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=8)
        written.append(_save(plt, figure, directory / "size.png"))
    return written


def _save(plt: Any, figure: Any, path: Path) -> Path:
    """Write one plot and free it."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
