"""Placement follows data, between real peers (issue 16, item 5): a job whose
input only peer B holds runs on B when B takes only `local` jobs; a `local`
node that lacks the input never runs it; an `anywhere` node may run it and
fetches the input from B, which it finds through B's provider records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import alive_count, data_url, eventually, wasm_job
from tests.test_ipfs_node import cli
from tests.wasm_fixtures import COPY

pytestmark = pytest.mark.timeout(300)

LOCAL = ["--job-selection-data-locality", "local"]
ANYWHERE = ["--job-selection-data-locality", "anywhere"]


def copy_job(cid: str, *roles: str) -> dict[str, Any]:
    job = wasm_job(data_url(COPY), constraints=[{"Key": "role", "Operator": "in", "Values": list(roles)}])
    task = job["Tasks"][0]
    task["InputSources"] = [{"Source": {"Type": "ipfs", "Params": {"CID": cid}}, "Target": "/inputs"}]
    task["Timeouts"]["QueueTimeout"] = 0
    return job


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Peer]]:
    base = tmp_path_factory.mktemp("net")
    started: list[Peer] = []
    try:
        started.append(start_peer(0, base / "b", [], LOCAL + ["--labels", "role=holder"]))
        first = list(started[0].addresses[:1])
        started.append(start_peer(1, base / "c", first, LOCAL + ["--labels", "role=local-other"]))
        started.append(start_peer(2, base / "d", first, ANYWHERE + ["--labels", "role=anywhere"]))
        with ApiClient(started[0].api) as client:
            eventually(lambda: alive_count(client) >= 3, 30)
        yield started
    finally:
        for peer in reversed(started):
            stop_peer(peer)


@pytest.fixture(scope="module")
def held_by_b(peers: list[Peer], tmp_path_factory: pytest.TempPathFactory) -> str:
    data = tmp_path_factory.mktemp("in")
    (data / "data.txt").write_bytes(b"only peer B holds this\n")
    return cli("ipfs", "add", str(data), "--api", peers[0].api).splitlines()[-1]


def run(peer: Peer, job: dict[str, Any]) -> dict[str, Any]:
    with ApiClient(peer.api) as client:
        job_id = client.submit(job)["JobID"]
        return client.wait(job_id, timeout=120)


def test_under_local_the_job_runs_on_the_one_peer_holding_its_input(peers: list[Peer], held_by_b: str) -> None:
    holder = peers[0]
    # Both `local` peers may be asked; only the holder bids. (Submitted through a peer that lacks the data.)
    done = run(peers[2], copy_job(held_by_b, "holder", "local-other"))
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    ran = [e["NodeID"] for e in done["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Completed"]
    assert ran == [holder.node_id]


def test_a_local_peer_that_lacks_the_input_never_runs_it(peers: list[Peer], held_by_b: str) -> None:
    done = run(peers[1], copy_job(held_by_b, "local-other"))
    assert done["Job"]["State"]["StateType"] == "Failed"
    assert "takes only jobs whose data it holds" in done["Job"]["State"]["Message"], done["Job"]["State"]
    assert not any(e["ComputeState"]["StateType"] == "Completed" for e in done["Executions"]["Items"])


def test_under_anywhere_a_peer_without_the_input_runs_it_fetching_from_the_holder(
    peers: list[Peer], held_by_b: str, tmp_path: Path
) -> None:
    anywhere = peers[2]
    done = run(peers[1], copy_job(held_by_b, "anywhere"))
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    [execution] = [e for e in done["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Completed"]
    assert execution["NodeID"] == anywhere.node_id
    out = tmp_path / "results"
    cli("job", "get", done["Job"]["ID"], "--output-dir", str(out), "--api", anywhere.api)
    assert (out / execution["ID"] / "outputs" / "copy.txt").read_bytes() == b"only peer B holds this\n"
