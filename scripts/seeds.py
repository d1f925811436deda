"""Run one of the simulator's fault scenarios over many seeds and print one line per seed.

The safety net for protocol changes: every seed must hold its invariants.

    .venv/bin/python scripts/seeds.py 1-100 [--workers 2] [--forgers 0.1] [-- extra sim options]
    .venv/bin/python scripts/seeds.py 1-100 --scenario burst

Scenarios:
- combined (the default): 200 nodes, 400 jobs, crashes, killed leaders, loss, a
  partition and slow nodes.
- burst (issue 14): 200 batch jobs within 2 s on 5 nodes whose CPU is 3 times
  slower than measured, with loss and crashes. Here a seed also fails on any
  extra start (a partition started again while its first node was only late,
  not crashed or cut off).

Exit status 1 when any seed breaks an invariant; the failing seeds are listed with the
command that replays each one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

COMBINED = [
    "--nodes", "200", "--jobs", "400", "--crash-rate", "0.2", "--kill-leaders", "2", "--loss", "0.05",
    "--partition", "20:40:0.3", "--slow-nodes", "0.1",
]
BURST = [
    "--nodes", "5", "--burst", "200:2", "--job-mix", "batch=1", "--cpu-scale", "3", "--loss", "0.02",
    "--crash-rate", "0.5",
]
SCENARIOS = {"combined": COMBINED, "burst": BURST}
NO_EXTRA_STARTS = {"burst"}  # scenarios where an extra start fails the seed


def seed_range(text: str) -> list[int]:
    """`1-100` or `3,7,9` or `5` -> seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def run_seed(seed: int, scenario: list[str], extra: list[str]) -> tuple[int, dict | None, str]:
    command = [sys.executable, "-m", "sim", "run", *scenario, *extra, "--seed", str(seed), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return seed, None, lines[-2] if len(lines) >= 2 else done.stderr.strip()
    return seed, json.loads(done.stdout), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seeds", type=seed_range, help="e.g. 1-100 or 3,7,9")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="combined")
    parser.add_argument("--forgers", default="0", help="forwarded to sim run --forgers")
    parser.add_argument("extra", nargs="*", help="more `sim run` options, after --")
    args = parser.parse_args()
    extra = ["--forgers", args.forgers, *args.extra]
    scenario = SCENARIOS[args.scenario]
    failed: list[int] = []
    totals = {"extra_starts": 0, "false_downs": 0, "refused": 0}
    with ThreadPoolExecutor(args.workers) as pool:
        for seed, report, error in pool.map(lambda s: run_seed(s, scenario, extra), args.seeds):
            if report is not None and args.scenario in NO_EXTRA_STARTS and report["extra_starts"]:
                report, error = None, f"{report['extra_starts']} extra starts (a partition started again while its first node was only late)"
            if report is None:
                failed.append(seed)
                print(f"seed {seed:4d}  FAILED  {error}", flush=True)
                continue
            refused = sum(report.get("refused", {}).values())
            totals["extra_starts"] += report["extra_starts"]
            totals["false_downs"] += report["false_downs"]
            totals["refused"] += refused
            states = " ".join(f"{k}={v}" for k, v in sorted(report["jobs_by_state"].items()))
            print(
                f"seed {seed:4d}  ok  {states}  extra_starts={report['extra_starts']} "
                f"false_downs={report['false_downs']} refused={refused}",
                flush=True,
            )
    print(f"{len(args.seeds) - len(failed)}/{len(args.seeds)} seeds hold; totals {totals}")
    for seed in failed:
        print(f"replay: python -m sim run {' '.join(scenario + extra)} --seed {seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
