"""`--ipfs-connect`: a node whose IPFS is an external daemon (npm's js-ipfs
0.66.1 with its HTTP RPC API, on loopback). `ipfs add` stores the blocks in
the daemon under our CIDs, a job reads its input from it and publishes its
results into it, and `job get` brings them back, verified."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from p2pnode.serve import free_port
from tests.test_ipfs_jobs import ipfs_job
from tests.test_ipfs_node import cli

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    subprocess.run([str(REPO / "scripts" / "setup_js_ipfs.sh")], check=True, timeout=900)
    jsipfs = REPO / ".cache" / "js-ipfs" / "node_modules" / ".bin" / "jsipfs"
    repo = tmp_path_factory.mktemp("jsipfs") / "repo"
    env = {**os.environ, "IPFS_PATH": str(repo)}
    subprocess.run([str(jsipfs), "init", "--profile", "test"], env=env, check=True, timeout=180, capture_output=True)
    config = json.loads((repo / "config").read_text())
    api = f"/ip4/127.0.0.1/tcp/{free_port()}"
    config["Addresses"].update({"API": api, "RPC": "/ip4/127.0.0.1/tcp/0", "Gateway": "/ip4/127.0.0.1/tcp/0",
                                "Swarm": ["/ip4/127.0.0.1/tcp/0"]})
    config["Bootstrap"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"] = {"Type": "none"}
    (repo / "config").write_text(json.dumps(config))
    log = open(repo.parent / "daemon.log", "wb")
    process = subprocess.Popen([str(jsipfs), "daemon", "--enable-preload=false"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Daemon is ready" not in (repo.parent / "daemon.log").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, (repo.parent / "daemon.log").read_text()
            time.sleep(0.2)
        yield api
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def peer(daemon: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    started = start_peer(0, tmp_path_factory.mktemp("node"), [], ["--ipfs-connect", daemon])
    try:
        yield started
    finally:
        stop_peer(started)


def test_a_job_runs_against_an_external_daemon(daemon: str, peer: Peer, tmp_path: Path) -> None:
    import ipfshttpclient

    data = tmp_path / "in"
    data.mkdir()
    (data / "data.txt").write_bytes(b"kept by js-ipfs\n")
    cid = cli("ipfs", "add", str(data), "--api", peer.api).splitlines()[-1]
    client = ipfshttpclient.Client(daemon)
    assert client.cat(f"{cid}/data.txt") == b"kept by js-ipfs\n"  # the daemon holds it under our CID
    job = ipfs_job(cid, "any")
    del job["Constraints"]
    with ApiClient(peer.api) as api:
        job_id = api.submit(job)["JobID"]
        done = api.wait(job_id, timeout=180)
    assert done["Job"]["State"]["StateType"] == "Completed", done["Job"]["State"]
    [execution] = done["Executions"]["Items"]
    result = execution["PublishedResult"]["Params"]["Location"].removeprefix("ipfs://")
    assert client.cat(f"{result}/outputs/copy.txt") == b"kept by js-ipfs\n"
    out = tmp_path / "results"
    cli("job", "get", job_id, "--output-dir", str(out), "--api", peer.api)
    assert (out / execution["ID"] / "outputs" / "copy.txt").read_bytes() == b"kept by js-ipfs\n"
    assert not (peer.data_dir / "ipfs" / "blocks").exists()  # nothing went to an embedded store
