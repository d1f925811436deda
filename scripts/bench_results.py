"""Throughput of results between peers, beside a plain disk copy.

Starts two `p2pnode serve` peers on loopback, runs a wasm job on the first
that writes SIZE MiB (default 1024: 1 GiB), then times `job get` of it
through the second peer (manifest, then 1 MiB chunks over libp2p, relayed
as an HTTP stream, written and hashed by the client) and a plain copy of the
same file on the same disk. Prints both; asserts nothing.

    .venv/bin/python scripts/bench_results.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.client import ApiClient  # noqa: E402
from p2pnode.devstack import start_peer, stop_peer  # noqa: E402
from tests.integration_support import alive_count, data_url, eventually, wasm_job  # noqa: E402
from tests.wasm_fixtures import WRITE_MIB  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="result size in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-results-") as base_text:
        base = Path(base_text)
        runner = start_peer(0, base / "runner", [], ["--labels", "role=runner"])
        peers = [runner]
        try:
            relay = start_peer(1, base / "relay", list(runner.addresses[:1]), ["--labels", "role=relay"])
            peers.append(relay)
            for peer in peers:
                with ApiClient(peer.api) as client:
                    eventually(lambda: alive_count(client) >= 2, 30, "two peers")
            job = wasm_job(data_url(WRITE_MIB), str(args.mib), timeout=1800,
                           constraints=[{"Key": "role", "Operator": "=", "Values": ["runner"]}])
            job["Tasks"][0]["Resources"]["Memory"] = "128Mb"
            with ApiClient(relay.api, timeout=120) as client:
                started = time.monotonic()
                job_id = client.submit(job)["JobID"]
                final = client.wait(job_id, timeout=1800)
                ran = time.monotonic() - started
                if final["Job"]["State"]["StateType"] != "Completed":
                    sys.exit(f"the job did not complete: {final['Job']['State']}")
                started = time.monotonic()
                files = client.download(job_id, base / "fetched")
                fetched = time.monotonic() - started
            (big,) = [p for p in files if p.name == "big.bin"]
            size = big.stat().st_size
            source = next((base / "runner" / "executions").glob("*/results/outputs/big.bin"))
            started = time.monotonic()
            shutil.copyfile(source, base / "copied.bin")
            copied = time.monotonic() - started
            mb = size / 1e6
            print(f"result: {size} bytes ({args.mib} MiB), made by the job in {ran:.1f} s")
            print(f"job get through a peer that did not run it: {fetched:6.1f} s  {mb / fetched:8.1f} MB/s")
            print(f"plain disk copy (shutil.copyfile):           {copied:6.1f} s  {mb / copied:8.1f} MB/s")
        finally:
            for peer in peers:
                stop_peer(peer)


if __name__ == "__main__":
    main()
