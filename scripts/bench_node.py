"""Benchmark a 3-peer network on this machine (prints figures; asserts nothing).

- submit-to-result latency p50/p99 of a trivial wasm batch job, beside the
  time to run the same module directly with wasmtime;
- sustained jobs per second with many jobs in flight;
- resident memory of an idle peer.

Run: .venv/bin/python scripts/bench_node.py [--jobs 30] [--burst 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pnode.client import ApiClient  # noqa: E402
from p2pnode.devstack import devstack  # noqa: E402
from tests.integration_support import data_url, wasm_job  # noqa: E402

HELLO_WAT = (ROOT / "examples" / "hello.wat").read_text()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def direct_wasmtime(runs: int) -> list[float]:
    """The same module run straight through wasmtime (compile + instantiate + run)."""
    module_bytes = wasmtime.wat2wasm(HELLO_WAT)
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            started = time.perf_counter()
            engine = wasmtime.Engine()
            module = wasmtime.Module(engine, module_bytes)
            linker = wasmtime.Linker(engine)
            linker.define_wasi()
            store = wasmtime.Store(engine)
            wasi = wasmtime.WasiConfig()
            wasi.argv = ["hello", "bench"]
            wasi.stdout_file = str(Path(out) / "stdout")
            wasi.preopen_dir(out, "/outputs")
            store.set_wasi(wasi)
            linker.instantiate(store, module).exports(store)["_start"](store)
            times.append(time.perf_counter() - started)
    return times


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs for the latency figures")
    parser.add_argument("--burst", type=int, default=60, help="jobs submitted at once for throughput")
    args = parser.parse_args()
    url = data_url(HELLO_WAT)
    direct = direct_wasmtime(args.jobs)
    with tempfile.TemporaryDirectory(prefix="p2pnode-bench-") as base, devstack(3, Path(base)) as peers:
        clients = [ApiClient(p.api) for p in peers]
        deadline = time.monotonic() + 30
        while sum(n["Connection"] == "CONNECTED" for n in clients[0].nodes()["Nodes"]) < 3:
            if time.monotonic() > deadline:
                raise SystemExit("the peers did not find each other")
            time.sleep(0.1)
        time.sleep(2)
        idle = [rss_mib(p.process.pid) for p in peers]

        latencies = []
        for i in range(args.jobs):
            started = time.perf_counter()
            job_id = clients[i % 3].submit(wasm_job(url, f"run{i}"))["JobID"]
            final = clients[(i + 1) % 3].wait(job_id, timeout=60, poll=0.01)
            assert final["Job"]["State"]["StateType"] == "Completed", final["Job"]["State"]
            latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            ids = list(pool.map(lambda i: clients[i % 3].submit(wasm_job(url, f"burst{i}"))["JobID"], range(args.burst)))
            finals = list(pool.map(lambda j: clients[0].wait(j, timeout=300, poll=0.05), ids))
        elapsed = time.perf_counter() - started
        completed = sum(f["Job"]["State"]["StateType"] == "Completed" for f in finals)
        for client in clients:
            client.close()

    ms = 1000
    print("3-peer network on loopback, trivial wasm batch job (examples/hello.wat)")
    print(f"  submit-to-result latency: p50 {percentile(latencies, 0.5) * ms:.1f} ms, p99 {percentile(latencies, 0.99) * ms:.1f} ms "
          f"(n={len(latencies)}, mean {statistics.mean(latencies) * ms:.1f} ms)")
    print(f"  same module run directly with wasmtime: p50 {percentile(direct, 0.5) * ms:.2f} ms, p99 {percentile(direct, 0.99) * ms:.2f} ms")
    print(f"  sustained: {completed}/{args.burst} jobs completed in {elapsed:.2f} s = {completed / elapsed:.1f} jobs/s")
    print(f"  idle peer resident memory: {', '.join(f'{m:.0f} MiB' for m in idle)}")


if __name__ == "__main__":
    main()
