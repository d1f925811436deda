"""The main job: a three-peer network on loopback runs a wasm job end to end.

It submits `examples/hello-wasm.yaml` to the first peer, lets the network pick
where it runs, fetches the result through the last peer, prints it, and stops
everything it started.
"""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path

import wasmtime
from rich.console import Console

from p2pnode.client import ApiClient, ApiClientError
from p2pnode.devstack import devstack
from protocols.jobspec import parse_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def module_data_url() -> str:
    """The demo's module, built from its WAT source right now."""
    module = wasmtime.wat2wasm((EXAMPLES / "hello.wat").read_text())
    return "data:application/wasm;base64," + base64.b64encode(module).decode()


def wait_for_members(client: ApiClient, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [n for n in client.nodes()["Nodes"] if n["Connection"] == "CONNECTED"]
        if len(alive) >= count:
            return
        if time.monotonic() > deadline:
            raise ApiClientError(f"only {len(alive)} of {count} peers see each other after {timeout:.0f} s")
        time.sleep(0.2)


def run_demo(nodes: int = 3, console: Console | None = None) -> int:
    console = console or Console()
    text = (EXAMPLES / "hello-wasm.yaml").read_text()
    spec = parse_job(text, variables={"module": module_data_url(), "name": "p2p world"}).spec
    with tempfile.TemporaryDirectory(prefix="p2pnode-demo-") as base:
        console.print(f"[bold]Starting {nodes} peers on loopback[/bold] (data in {base})")
        with devstack(nodes, Path(base)) as peers:
            for peer in peers:
                console.print(f"  peer {peer.index}: {peer.node_id}  API {peer.api}", soft_wrap=True)  # whole, to copy
            first, last = ApiClient(peers[0].api), ApiClient(peers[-1].api)
            wait_for_members(first, nodes)
            started = time.monotonic()
            job_id = first.submit(spec.to_document())["JobID"]
            console.print(f"[bold]Submitted[/bold] {job_id} to peer 0")
            answer = last.wait(job_id, timeout=120)
            job = answer["Job"]
            state = job["State"]["StateType"]
            console.print(f"Job {state} in {time.monotonic() - started:.2f} s: {job['State']['Message']}")
            for execution in answer.get("Executions", {}).get("Items", []):
                ran_on = next((p.index for p in peers if p.node_id == execution["NodeID"]), "?")
                console.print(
                    f"  execution {execution['ID']} on peer {ran_on}: {execution['ComputeState']['StateType']}"
                )
            out = Path(base) / "results"
            files = last.download(job_id, out)
            console.print(f"[bold]Results fetched through peer {len(peers) - 1}:[/bold]")
            for path in files:
                console.print(f"  {path.relative_to(out)}: {path.read_text(errors='replace').strip()!r}")
            first.close()
            last.close()
            return 0 if state == "Completed" else 1
