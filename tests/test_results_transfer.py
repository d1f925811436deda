"""Results of any size from any peer: real `p2pnode serve` processes on
loopback, a wasm job writing 100 MiB, fetched through a peer that did not
run it, also across a restart of the node that holds them."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from p2pnode.client import ApiClient, ApiClientError
from tests.integration_support import data_url, eventually, wasm_job
from tests.test_integration import HELLO_WAT
from tests.test_integration import Network, network  # noqa: F401 - the fixture
from tests.wasm_fixtures import WRITE_MIB, mib_pattern

pytestmark = pytest.mark.timeout(300)
MIB = 100
WORKER = [{"Key": "role", "Operator": "=", "Values": ["worker"]}]


def _expected_sha256(mib: int) -> str:
    digest, block = hashlib.sha256(), mib_pattern()
    for _ in range(mib):
        digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _big_job(network: Network) -> tuple[str, str]:
    """Three peers; a 100 MiB result made on the worker. (job id, execution id)"""
    network.start(0, "--labels", "role=front")
    network.start(1, "--labels", "role=worker")
    network.start(2, "--labels", "role=front")
    network.converge(3)
    job = wasm_job(data_url(WRITE_MIB), str(MIB), constraints=WORKER, timeout=240)
    job["Tasks"][0]["Resources"]["Memory"] = "128Mb"
    with network.client(0) as client:
        for _ in range(3):
            job_id = client.submit(job)["JobID"]
            final = client.wait(job_id, timeout=180)
            # On a loaded 2-core machine a bid can miss its 0.5 s window; that is
            # not what this test is about, so such a run is submitted again.
            if "no answer within" not in final["Job"]["State"].get("Message", ""):
                break
    assert final["Job"]["State"]["StateType"] == "Completed", final["Job"]["State"]
    (execution,) = [e for e in final["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Completed"]
    return job_id, execution["ID"]


def test_a_100_mib_result_comes_back_byte_exact_through_another_peer_also_across_a_restart_of_its_node(
    network: Network, tmp_path: Path  # noqa: F811
) -> None:
    job_id, execution_id = _big_job(network)
    with network.client(2) as client:  # peer 2 did not run it: the worker did
        written = client.download(job_id, tmp_path / "out")
    folder = tmp_path / "out" / execution_id
    assert sorted(str(p.relative_to(folder)) for p in written) == ["exitCode", "outputs/big.bin", "stderr", "stdout"]
    assert (folder / "exitCode").read_text() == "0\n"
    big = folder / "outputs" / "big.bin"
    assert big.stat().st_size == MIB << 20
    assert _sha256(big) == _expected_sha256(MIB)
    assert not list(folder.rglob("*.part"))

    # Again, into another folder, with the worker killed and restarted mid-way.
    worker = next(p for p in network.peers if p.index == 1)
    partial = tmp_path / "again" / execution_id / "outputs" / "big.bin.part"
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            with network.client(2) as client:
                outcome["files"] = client.download(job_id, tmp_path / "again")
        except ApiClientError as error:  # reported below, with what the test saw
            outcome["error"] = error

    thread = threading.Thread(target=fetch)
    thread.start()
    eventually(lambda: partial.exists() and partial.stat().st_size > (5 << 20), 120, "the transfer under way")
    network.kill(worker.node_id)
    cut_at = partial.stat().st_size if partial.exists() else 0
    network.start(1, "--labels", "role=worker")  # same data dir, same identity
    thread.join(timeout=200)
    assert not thread.is_alive(), "the download hung"
    assert "error" not in outcome, outcome
    assert 0 < cut_at < MIB << 20, f"the restart came at {cut_at} bytes: not mid-transfer"
    assert _sha256(tmp_path / "again" / execution_id / "outputs" / "big.bin") == _expected_sha256(MIB)


def test_expired_results_say_so_through_any_peer(network: Network, tmp_path: Path) -> None:  # noqa: F811
    network.start(0, "--labels", "role=worker", "--results-retention", "1")
    network.start(1)
    network.converge(2)
    with network.client(0) as runner, network.client(1) as other:
        first = runner.submit(wasm_job(data_url(HELLO_WAT), "first", constraints=WORKER))["JobID"]
        other.wait(first, timeout=60)
        assert other.download(first, tmp_path / "before")  # kept for now
        time.sleep(1.5)
        # the next publish on a node sweeps what is past its retention
        second = runner.submit(wasm_job(data_url(HELLO_WAT), "second", constraints=WORKER))["JobID"]
        runner.wait(second, timeout=60)
        with pytest.raises(ApiClientError, match="expired: this node keeps results for 1 s"):
            other.download(first, tmp_path / "after")
