"""Benchmark the node's job store on this machine (prints figures; asserts nothing).

A job on `--executions` nodes (an ops or daemon job) is saved as its leader
saves it: once placed, then once for each execution that starts and once for
each that completes, one execution and one history event changing at a time.
For each code base it prints the CPU seconds of those saves and the size of
the database file after them. `--against REV` runs a checkout of REV beside
this code (a git worktree in a temporary directory), alternated `--runs`
times: compare only runs made together on this shared machine.

Run: .venv/bin/python scripts/bench_store.py [--executions 1000] [--runs 2] [--against REV]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from worktree import checked_out  # beside this script

HERE = Path(__file__).resolve().parent.parent

# Runs in a process of its own with the code under test first on its path.
_ONE_RUN = r"""
import json, sys, tempfile, time
from dataclasses import replace
from pathlib import Path
from p2pnode.store import Store
from protocols.jobspec import parse_job
from protocols.records import (DesiredState, ExecutionRecord, ExecutionState, HistoryEvent, JobDelta, JobHeader,
                               JobState)

count = int(sys.argv[1])
spec = parse_job(
    "Type: ops\nTasks:\n  - Engine:\n      Type: wasm\n      Params:\n        EntryModule:\n"
    "          Target: /m.wasm\n          Source:\n            Type: inline\n            Params:\n"
    "              URL: 'data:,x'\n"
).spec
header = JobHeader("job-1", spec, "bench", JobState.RUNNING, "placed", 1, 1, 1, "leader", ("a", "b"), 1.0, 1.0)
executions = [
    ExecutionRecord(f"job-1-e{i}", "job-1", f"node-{i}", 0, ExecutionState.BID_ACCEPTED, DesiredState.RUNNING,
                    1, 1, 1.0, 1.0, "bid accepted")
    for i in range(count)
]
events = ()
saves = [JobDelta(header, tuple(executions), events)]
for step, state in enumerate((ExecutionState.RUNNING, ExecutionState.COMPLETED)):
    for i in range(count):
        executions[i] = replace(executions[i], state=state, revision=executions[i].revision + 1, message=str(state))
        event = HistoryEvent(2.0 + step * count + i, i, "leader", "ExecutionStateChanged", str(state), executions[i].id)
        events = (events + (event,))[-200:]
        saves.append(JobDelta(header, tuple(executions), events))
with tempfile.TemporaryDirectory() as scratch:
    path = Path(scratch) / "node.db"
    store = Store(path)
    started = time.process_time()
    for delta in saves:
        store.save_job(delta)
    cpu = time.process_time() - started
    store.close()
    size = path.stat().st_size
print(json.dumps({"saves": len(saves), "cpu_s": round(cpu, 2), "file_mib": round(size / 2**20, 1)}))
"""


def one_run(root: Path, executions: int) -> dict[str, object]:
    environment = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _ONE_RUN, str(executions)], cwd=root, env=environment,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run in {root} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=1000, help="nodes the job runs on (default 1000)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each code base, alternated")
    parser.add_argument("--against", metavar="REV", help="also run the code at this git revision")
    args = parser.parse_args()
    if args.executions < 1 or args.runs < 1:
        parser.error("--executions and --runs must be at least 1")
    with checked_out(args.against) if args.against else nullcontext() as other:
        roots = [("this code", HERE)] + ([(args.against, other)] if other else [])
        results: dict[str, list[dict[str, object]]] = {name: [] for name, _ in roots}
        for _ in range(args.runs):
            for name, root in roots:
                results[name].append(one_run(root, args.executions))
    print(f"a job on {args.executions} nodes, {2 * args.executions + 1} saves (load {os.getloadavg()[0]:.2f})")
    for name, runs in results.items():
        cpu = " / ".join(str(r["cpu_s"]) for r in runs)
        print(f"{name:>12}: CPU {cpu} s, file {runs[-1]['file_mib']} MiB")


if __name__ == "__main__":
    main()
