"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print their tables and
one ``RESULT`` line per target, and keep the report in ``var/bench/latest.md``.

A missed target is a finding, not an error: the exit status is non-zero only when a
benchmark could not run at all (its targets are then reported as ``measured=nan ... fail``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import platform
import sys
import time
import traceback
from types import ModuleType

from bench import gateway_overhead, import_processing, logins, upload_streaming
from bench.common import ROOT, Report, Result, load_average, say

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (gateway_overhead, upload_streaming, logins, import_processing)
}


def run_one(module: ModuleType, quick: bool) -> tuple[Report, bool]:
    started = time.monotonic()
    try:
        outcome = module.run(quick)
        report = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
        ok = True
    except Exception as exc:
        traceback.print_exc()
        report = Report(module.NAME)
        report.notes.append(f"could not run: {type(exc).__name__}: {str(exc)[:500]}")
        report.results += [Result(name, float("nan"), target, higher)
                           for name, target, higher in module.TARGETS]
        ok = False
    report.notes.append(f"took {time.monotonic() - started:.0f} s")
    return report, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and shorter runs (a few minutes in all)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None,
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    command = "python -m bench" + (" --quick" if args.quick else "") + (
        f" --only {' '.join(args.only)}" if args.only else "")
    header = [
        "# Benchmark results",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"{platform.machine()}, Linux {platform.release()}, Python {platform.python_version()}",
        f"- command: `{command}`",
        f"- load average at start: {load_average():.2f}",
        "",
    ]
    say(f"running {', '.join(names)}{' (quick)' if args.quick else ''}; "
        f"load average {load_average():.2f}")
    reports: list[str] = []
    results: list[Result] = []
    all_ran = True
    for name in names:
        say(f"== {name}")
        report, ok = run_one(BENCHMARKS[name], args.quick)
        all_ran &= ok
        reports.append(report.render())
        results += report.results
        print(report.render(), flush=True)
        print(flush=True)
    document = "\n".join(header) + "\n" + "\n\n".join(reports) + "\n"
    out = ROOT / "var" / "bench" / "latest.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document)
    say(f"report written to {out.relative_to(ROOT)}")
    for result in results:
        print(result.line(), flush=True)
    return 0 if all_ran else 1


if __name__ == "__main__":
    sys.exit(main())
