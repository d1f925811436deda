"""Jobs on IPFS data between real peers: an `ipfs` input only another peer
holds is fetched and mounted read-only, the `ipfs` publisher adds stdout,
stderr, exitCode and each result folder as one directory, and `job get`
through a different peer fetches and verifies it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from p2pnode.ipfs.importer import add_path, discard
from tests.integration_support import alive_count, data_url, eventually, wasm_job
from tests.test_ipfs_node import cli
from tests.wasm_fixtures import COPY

pytestmark = pytest.mark.timeout(240)


def ipfs_job(cid: str, runner_label: str) -> dict[str, Any]:
    job = wasm_job(data_url(COPY))
    task = job["Tasks"][0]
    task["InputSources"] = [{"Source": {"Type": "ipfs", "Params": {"CID": cid}}, "Target": "/inputs"}]
    task["Publisher"] = {"Type": "ipfs"}
    job["Constraints"] = [{"Key": "role", "Operator": "=", "Values": [runner_label]}]
    return job


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Peer]]:
    base = tmp_path_factory.mktemp("net")
    started: list[Peer] = []
    try:
        started.append(start_peer(0, base / "a", [], ["--labels", "role=holder"]))
        started.append(start_peer(1, base / "b", list(started[0].addresses[:1]), ["--labels", "role=runner"]))
        with ApiClient(started[0].api) as client:
            eventually(lambda: alive_count(client) >= 2, 30)
        yield started
    finally:
        for peer in reversed(started):
            stop_peer(peer)


def test_a_job_reads_an_ipfs_input_and_publishes_to_ipfs(peers: list[Peer], tmp_path: Path) -> None:
    holder, runner = peers
    data = tmp_path / "in"
    data.mkdir()
    (data / "data.txt").write_bytes(b"held only by the first peer\n")
    cid = cli("ipfs", "add", str(data), "--api", holder.api).splitlines()[-1]
    with ApiClient(holder.api) as client:
        job_id = client.submit(ipfs_job(cid, "runner"))["JobID"]
        done = client.wait(job_id, timeout=120)
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    [execution] = done["Executions"]["Items"]
    assert execution["NodeID"] == runner.node_id
    location = execution["PublishedResult"]["Params"]["Location"]
    assert execution["PublishedResult"]["Type"] == "ipfs" and location.startswith("ipfs://")
    out = tmp_path / "results"
    cli("job", "get", job_id, "--output-dir", str(out), "--api", holder.api)  # through the other peer
    got = out / execution["ID"]
    assert (got / "outputs" / "copy.txt").read_bytes() == b"held only by the first peer\n"
    assert (got / "exitCode").read_text() == "0" and (got / "stdout").is_file() and (got / "stderr").is_file()
    assert location == "ipfs://" + str(add_path(got, discard).cid)  # what came back is what was published


def test_an_input_nobody_holds_fails_the_job_with_the_reason(peers: list[Peer]) -> None:
    missing = str(add_path(Path(__file__), discard).cid)  # never added anywhere
    with ApiClient(peers[0].api) as client:
        job_id = client.submit(ipfs_job(missing, "runner"))["JobID"]
        done = client.wait(job_id, timeout=120)
    assert done["Job"]["State"]["StateType"] == "Failed"
    errors = [e.get("ComputeState", {}).get("Message", "") for e in done["Executions"]["Items"]]
    assert any("no connected peer has block" in message for message in errors), done
