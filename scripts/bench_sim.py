"""Benchmark the simulator on this machine (prints figures; asserts nothing).

For each size (`--size NODESxJOBS`, default the issue's 1000x10000), one
`python -m sim run --json` in a fresh process, timed from outside: wall
seconds, CPU seconds, peak resident memory, events and events per CPU second.

`--against REV` also runs a checkout of REV (a git worktree in a temporary
directory), alternating the two `--runs` times, and says whether both printed
the same report but for their timings: a change meant to make the simulator
faster must leave what it simulates alone. Compare only runs made together
on this shared machine; the load average is printed beside them.

Run: .venv/bin/python scripts/bench_sim.py [--size 1000x10000 ...] [--runs 1] [--against REV] [-- SIM RUN FLAGS]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from worktree import checked_out  # beside this script

HERE = Path(__file__).resolve().parent.parent
TIMINGS = ("wall_time", "events_per_second")  # the parts of a report that differ from run to run


def run_sim(root: Path, nodes: int, jobs: int, extra: list[str]) -> dict[str, Any]:
    """One simulation of the code at `root`, in a process of its own, whose
    own resource use the kernel reports when it ends (`wait4`)."""
    command = [sys.executable, "-m", "sim", "run", "--nodes", str(nodes), "--jobs", str(jobs), "--json", *extra]
    environment = dict(os.environ, PYTHONPATH=str(root))
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=root, env=environment, stdout=out)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"`{' '.join(command)}` in {root} exited with {process.returncode}")
        out.seek(0)
        report = json.load(out)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "events": report["events"],
        "events_per_cpu_s": round(report["events"] / cpu) if cpu else None,
        "load_average": round(os.getloadavg()[0], 2),
        "report": {k: v for k, v in report.items() if k not in TIMINGS},
    }


def parse_size(text: str) -> tuple[int, int]:
    try:
        nodes, jobs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is NODESxJOBS, e.g. 1000x10000, not {text!r}") from None
    if nodes < 1 or jobs < 1:
        raise argparse.ArgumentTypeError(f"a size needs at least one node and one job, not {text!r}")
    return nodes, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, action="append", help="NODESxJOBS (repeatable; default 1000x10000)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each code base per size, alternated")
    parser.add_argument("--against", metavar="REV", help="also run the code at this git revision")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("extra", nargs="*", help="flags for `sim run` after --, e.g. -- --seed 2 --loss 0.01")
    args = parser.parse_args()
    sizes = args.size or [(1000, 10000)]
    with checked_out(args.against) if args.against else nullcontext(None) as other:
        roots = {args.against: other, "this code": HERE} if other is not None else {"this code": HERE}
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for nodes, jobs in sizes:
            size = f"{nodes}x{jobs}"
            for _ in range(args.runs):
                for name, root in roots.items():
                    results.setdefault(size, {}).setdefault(name, []).append(run_sim(root, nodes, jobs, args.extra))
    if args.json:
        print(json.dumps({size: {name: [{k: v for k, v in run.items() if k != "report"} for run in runs]
                                 for name, runs in by_code.items()} | {"same_report": _same(by_code)}
                          for size, by_code in results.items()}))
        return
    for size, by_code in results.items():
        print(f"sim {size} ({args.runs} run{'s' * (args.runs > 1)} each, alternated)")
        for name, runs in by_code.items():
            print(f"  {name:>14}: wall {_figures(runs, 'wall_s')} s, CPU {_figures(runs, 'cpu_s')} s, "
                  f"peak {_figures(runs, 'peak_rss_mib')} MiB, {runs[0]['events']:,} events, "
                  f"{_figures(runs, 'events_per_cpu_s')} events per CPU-s, load {_figures(runs, 'load_average')}")
        if len(by_code) > 1:
            print(f"  same report but for timings: {_same(by_code)}")


def _figures(runs: list[dict[str, Any]], key: str) -> str:
    values = [run[key] for run in runs]
    return " / ".join(map(str, values)) + (f" (median {statistics.median(values)})" if len(values) > 2 else "")


def _same(by_code: dict[str, list[dict[str, Any]]]) -> bool:
    reports = [json.dumps(run["report"], sort_keys=True) for runs in by_code.values() for run in runs]
    return len(set(reports)) == 1


if __name__ == "__main__":
    main()
