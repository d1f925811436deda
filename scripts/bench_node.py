"""Benchmark a 3-peer network on this machine (prints figures; asserts nothing).

- submit-to-result latency p50/p99 of a trivial wasm batch job, one job at a
  time, beside the same module run directly through the node's wasm engine
  with its module already cached (what a peer does once it has the module);
- sustained jobs per second for a burst of jobs from 16 client threads, and
  how many of them ran exactly once (completed, with one execution that ran);
- CPU milliseconds per job of each peer process over the burst;
- resident memory of each idle peer, and each peer's peak after the burst;
- with `--memory-cap 256M`, each peer runs under that memory limit (a cgroup
  of its own, see memory_cap.py) and the figures say what the kernel charged,
  whether the limit was hit, and whether any peer was killed.

`--against REV` runs the same measurements on a checkout of REV (a git
worktree in a temporary directory) first, then on this code, and prints both
side by side: compare only runs made together on this shared machine.

Run: .venv/bin/python scripts/bench_node.py [--jobs 30] [--burst 200] [--json] [--against REV] [--memory-cap 256M]
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CLIENT_THREADS = 16
RAN = {"Running", "Publishing", "Completed"}
JOB_PATIENCE = 180.0  # seconds a burst job may take before it counts as not completed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def use_code_at(root: Path) -> None:
    """Import p2pnode (here and in the peers we start) from `root`, not from the
    venv's install nor the current directory (`python -m` looks there first)."""
    os.chdir(root)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def direct_wasm_ms(root: Path, runs: int) -> list[float]:
    """The module run by the node's own engine, compiled once and then cached."""
    from p2pnode.engines.wasm import WasmEngine, WasmRun  # the code under test

    module = (root / "examples" / "hello.wat").read_text().encode()
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        engine = WasmEngine(Path(scratch) / "cache")
        try:
            for i in range(runs + 1):
                out = Path(scratch) / f"out{i}"
                out.mkdir()
                started = time.perf_counter()
                engine.run(WasmRun(module=module, output_dir=out, arguments=("hello", "bench")))
                if i:  # the first run compiles
                    times.append((time.perf_counter() - started) * 1000)
        finally:
            engine.close()
    return times


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def ran_exactly_once(answer: dict[str, Any]) -> bool:
    executions = answer.get("Executions", {}).get("Items", [])
    ran = [e for e in executions if e["ComputeState"]["StateType"] in RAN or "RunOutput" in e]
    return answer["Job"]["State"]["StateType"] == "Completed" and len(ran) == 1


@contextmanager
def three_peers(base: Path, caps: list[Any]) -> Iterator[list[Any]]:
    """`devstack(3, base)`; with caps, each peer is started inside its own."""
    from p2pnode.devstack import NETWORK_KEY, devstack, start_peer, stop_peer
    from p2pnode.netkey import new_key

    if not caps:
        with devstack(3, base) as peers:
            yield peers
        return
    new_key(base / NETWORK_KEY)
    extra = ["--network-key", str(base / NETWORK_KEY)]
    peers: list[Any] = []
    try:
        for index, cap in enumerate(caps):
            with cap.entered():
                bootstrap = list(peers[0].addresses[:1]) if peers else []
                peers.append(start_peer(index, base / f"node-{index}", bootstrap, extra))
        yield peers
    finally:
        for peer in reversed(peers):
            stop_peer(peer)


def measure(root: Path, jobs: int, burst: int, memory_cap: str | None = None) -> dict[str, Any]:
    """Every figure for the code at `root`."""
    from memory_cap import MemoryCap, parse_size  # beside this script

    load_before = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
    use_code_at(root)
    from p2pnode.client import ApiClient, ApiClientError
    from tests.integration_support import data_url, wasm_job

    url = data_url((root / "examples" / "hello.wat").read_text())
    direct = direct_wasm_ms(root, jobs)
    caps = [MemoryCap(parse_size(memory_cap)) for _ in range(3)] if memory_cap else []
    try:
        with tempfile.TemporaryDirectory(prefix="p2pnode-bench-") as base, three_peers(Path(base), caps) as peers:
            clients = [ApiClient(p.api) for p in peers]
            deadline = time.monotonic() + 30
            while sum(n["Connection"] == "CONNECTED" for n in clients[0].nodes()["Nodes"]) < 3:
                if time.monotonic() > deadline:
                    raise SystemExit("the peers did not find each other")
                time.sleep(0.1)
            time.sleep(3)
            idle = [rss_mib(p.process.pid) for p in peers]

            latencies = []
            for i in range(jobs):
                started = time.perf_counter()
                job_id = clients[i % 3].submit(wasm_job(url, f"run{i}"))["JobID"]
                final = clients[(i + 1) % 3].wait(job_id, timeout=60, poll=0.01)
                assert final["Job"]["State"]["StateType"] == "Completed", final["Job"]["State"]
                latencies.append((time.perf_counter() - started) * 1000)

            cpu_before = [cpu_seconds(p.process.pid) for p in peers]
            pool_clients = [ApiClient(peers[i % 3].api) for i in range(CLIENT_THREADS)]

            def one_job(i: int) -> dict[str, Any]:
                client = pool_clients[i % CLIENT_THREADS]
                try:
                    job_id = client.submit(wasm_job(url, f"burst{i}"))["JobID"]
                    return client.wait(job_id, timeout=JOB_PATIENCE, poll=0.01)
                except ApiClientError as error:  # counted as not completed
                    print(f"burst job {i}: {error}", file=sys.stderr)
                    return {"Job": {"State": {"StateType": "Unfinished"}}}

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
                finals = list(pool.map(one_job, range(burst)))
            elapsed = time.perf_counter() - started
            cpu_ms = [(cpu_seconds(p.process.pid) - before) * 1000 / burst for p, before in zip(peers, cpu_before)]
            completed = sum(f["Job"]["State"]["StateType"] == "Completed" for f in finals)
            peak = [rss_mib(p.process.pid, "VmHWM") for p in peers]
            alive = [p.process.poll() is None for p in peers]
            capped = [cap.report() for cap in caps]
            for client in clients + pool_clients:
                client.close()
    finally:  # empty once its peer is gone
        for cap in caps:
            cap.remove()
    figures: dict[str, Any] = {}
    if memory_cap:
        figures["memory_cap"] = {"limit": memory_cap, "peers_alive_after_burst": alive,
                                 "peak_charged_mib": [round(c["peak"] / 2**20) for c in capped],
                                 "times_limit_hit": [c["hit_limit"] for c in capped],
                                 "oom_kills": [c["oom_kills"] for c in capped]}
    return figures | {
        "load_average": [round(os.getloadavg()[0], 2), load_before],  # now (1 min), and as the run began
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p99": round(percentile(latencies, 0.99), 1),
                       "mean": round(statistics.mean(latencies), 1), "n": len(latencies)},
        "direct_wasm_ms": {"p50": round(percentile(direct, 0.5), 2), "p99": round(percentile(direct, 0.99), 2)},
        "latency_minus_direct_p50_ms": round(percentile(latencies, 0.5) - percentile(direct, 0.5), 1),
        "burst": {"jobs": burst, "clients": CLIENT_THREADS, "seconds": round(elapsed, 2),
                  "jobs_per_s": round(completed / elapsed, 1), "completed": completed,
                  "exactly_once": sum(map(ran_exactly_once, finals))},
        "cpu_ms_per_job": {"per_peer": [round(c, 1) for c in cpu_ms], "all_peers": round(sum(cpu_ms), 1)},
        "idle_rss_mib": [round(m) for m in idle],
        "peak_rss_mib": [round(m) for m in peak],
    }


def measure_in_child(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh interpreter per code base: modules of one never leak into the other."""
    command = [sys.executable, str(Path(__file__).resolve()), "--json", "--root", str(root),
               "--jobs", str(args.jobs), "--burst", str(args.burst)]
    if args.memory_cap:
        command += ["--memory-cap", args.memory_cap]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    rows = [
        ("submit-to-result p50 ms", lambda r: r["latency_ms"]["p50"]),
        ("submit-to-result p99 ms", lambda r: r["latency_ms"]["p99"]),
        ("direct wasm (cached) p50 ms", lambda r: r["direct_wasm_ms"]["p50"]),
        ("p50 minus direct ms", lambda r: r["latency_minus_direct_p50_ms"]),
        ("burst jobs/s", lambda r: r["burst"]["jobs_per_s"]),
        ("burst completed / ran exactly once", lambda r: f"{r['burst']['completed']}/{r['burst']['exactly_once']} of {r['burst']['jobs']}"),
        ("CPU ms per job, per peer", lambda r: " ".join(map(str, r["cpu_ms_per_job"]["per_peer"]))),
        ("CPU ms per job, all peers", lambda r: r["cpu_ms_per_job"]["all_peers"]),
        ("idle RSS MiB per peer", lambda r: " ".join(map(str, r["idle_rss_mib"]))),
        ("peak RSS MiB per peer", lambda r: " ".join(map(str, r.get("peak_rss_mib", [])))),
        ("load average, start / end", lambda r: " / ".join(map(str, reversed(r.get("load_average", []))))),
    ]
    if any("memory_cap" in r for r in results.values()):
        rows += [
            ("memory cap per peer", lambda r: r["memory_cap"]["limit"]),
            ("peak charged MiB per peer", lambda r: " ".join(map(str, r["memory_cap"]["peak_charged_mib"]))),
            ("limit hit / OOM kills", lambda r: f"{sum(r['memory_cap']['times_limit_hit'])} / {sum(r['memory_cap']['oom_kills'])}"),
            ("peers alive after burst", lambda r: sum(r["memory_cap"]["peers_alive_after_burst"])),
    ]
    print(f"{'3 peers on loopback, hello.wat':36}" + "".join(f"{n:>22}" for n in names))
    for label, get in rows:
        print(f"{label:36}" + "".join(f"{str(get(results[n])):>22}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs for the latency figures")
    parser.add_argument("--burst", type=int, default=200, help=f"jobs submitted from {CLIENT_THREADS} clients")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--against", metavar="REV", help="also measure the code at this git revision")
    parser.add_argument("--memory-cap", metavar="SIZE", help="run each peer under this memory limit (e.g. 256M; root, cgroups)")
    parser.add_argument("--root", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.against:
        result = measure(args.root.resolve(), args.jobs, args.burst, args.memory_cap)
        print(json.dumps(result) if args.json else "", end="\n" if args.json else "")
        if not args.json:
            print_table({"this code": result})
        return
    from worktree import checked_out  # beside this script

    with checked_out(args.against) as other:
        results = {args.against: measure_in_child(other, args), "this code": measure_in_child(HERE, args)}
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
