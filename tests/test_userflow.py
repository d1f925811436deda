"""What users and operators see, on three real peers: the CLI in pipes and
scripts, live logs through any peer, bids held for the operator, and
retries that only go again when another try could end otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from p2pnode.client import ApiClient, ApiClientError
from p2pnode.config import FLAG_TO_PROPERTY
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import (
    TICKER_WAT,
    TRAP_WAT,
    alive_count,
    data_url,
    eventually,
    wasm_job,
)

pytestmark = pytest.mark.timeout(240)
HELLO_WAT = (Path(__file__).resolve().parent.parent / "examples" / "hello.wat").read_text()


class _Probe(BaseHTTPRequestHandler):
    """An operator's http probe: jobs named held-* wait for the operator, others are taken."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        document = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if document["job"]["Name"].startswith("held"):
            reply = {"shouldBid": False, "shouldWait": True, "reason": "the operator looks at it"}
        else:
            reply = {"shouldBid": True, "reason": "fine"}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def probe_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/probe"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, probe_url: str) -> Iterator[list[Peer]]:
    base = tmp_path_factory.mktemp("userflow")
    started: list[Peer] = []
    try:
        started.append(start_peer(0, base / "p0", [], ["--labels", "peer=0"]))
        bootstrap = list(started[0].addresses[:1])
        started.append(start_peer(1, base / "p1", bootstrap, ["--labels", "peer=1"]))
        started.append(start_peer(2, base / "p2", bootstrap, ["--labels", "peer=2", "--job-selection-probe-http", probe_url]))
        with ApiClient(started[0].api) as client:
            eventually(lambda: alive_count(client) == 3, 30, "three peers alive")
        with ApiClient(started[2].api) as client:
            eventually(lambda: alive_count(client) == 3, 30, "three peers alive")
        yield started
    finally:
        for peer in reversed(started):
            stop_peer(peer)


def on(peer: str, job: dict[str, Any]) -> dict[str, Any]:
    job["Constraints"] = [{"Key": "peer", "Operator": "=", "Values": [peer]}]
    return job


def cli(peer: Peer, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command in a pipe: stdout and stderr are not terminals."""
    env = {**os.environ, "P2PNODE_API": peer.api}
    return subprocess.run([sys.executable, "-m", "p2pnode", *arguments], capture_output=True, text=True, env=env,
                           timeout=timeout, check=False)


def job_file(tmp_path: Path, job: dict[str, Any]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return str(path)


# ---------------------------------------------------------------- the CLI in pipes


def test_run_prints_only_the_document_and_exits_by_the_jobs_fate(peers: list[Peer], tmp_path: Path) -> None:
    done = cli(peers[0], "job", "run", job_file(tmp_path, wasm_job(data_url(HELLO_WAT), "pipes")), "-o", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # nothing else on stdout
    assert document["Job"]["State"]["StateType"] == "Completed"
    assert "submitted" in done.stderr
    done = cli(peers[0], "job", "run", job_file(tmp_path, wasm_job(data_url(HELLO_WAT), "yaml")), "-o", "yaml")
    assert done.returncode == 0 and done.stdout.startswith("Job:")

    failed = cli(peers[0], "job", "run", job_file(tmp_path, wasm_job(data_url(TRAP_WAT))), "-o", "json")
    assert failed.returncode == 1
    job = json.loads(failed.stdout)["Job"]
    assert job["State"]["StateType"] == "Failed"
    got = cli(peers[0], "job", "get", job["ID"], "--output-dir", str(tmp_path / "out"))
    assert got.returncode == 1 and "Failed" in got.stderr


def test_tables_in_a_pipe_are_whole(peers: list[Peer], tmp_path: Path) -> None:
    with ApiClient(peers[0].api) as client:
        job = wasm_job(data_url(HELLO_WAT), "a-rather-long-name-that-a-terminal-would-cut-short")
        job["Name"] = "x" * 120
        job_id = client.submit(job)["JobID"]
        client.wait(job_id, timeout=60)
    listing = cli(peers[0], "job", "list")
    assert listing.returncode == 0
    rows = [line for line in listing.stdout.splitlines() if job_id in line]
    assert len(rows) == 1 and "x" * 120 in rows[0]  # the whole id and name, on one line
    executions = cli(peers[0], "job", "executions", job_id)
    execution = client_executions(peers[0], job_id)[0]
    assert execution["ID"] in executions.stdout and execution["NodeID"] in executions.stdout
    nodes = cli(peers[0], "node", "list")
    assert all(peer.node_id in nodes.stdout for peer in peers)


def client_executions(peer: Peer, job_id: str) -> list[dict[str, Any]]:
    with ApiClient(peer.api) as client:
        return client.executions(job_id)["Items"]


def test_version_and_serve_help_show_everything(peers: list[Peer]) -> None:
    done = cli(peers[0], "version", "-o", "json")
    assert done.returncode == 0
    versions = json.loads(done.stdout)
    assert versions["ClientVersion"].startswith("v") and versions["ServerVersion"] == versions["ClientVersion"]
    help_text = cli(peers[0], "serve", "--help").stdout
    for flag, prop in FLAG_TO_PROPERTY.items():
        assert flag in help_text and prop in help_text.replace("\n", "").replace(" ", ""), flag


def test_config_set_get_list_and_serve_reads_it(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("P2PNODE_")}
    base = [sys.executable, "-m", "p2pnode", "config"]

    def config(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *arguments, "--data-dir", str(tmp_path)], capture_output=True, text=True,
                              env=env, timeout=60, check=False)

    assert config("set", "Node.Compute.Capacity.CPU", "1.5").returncode == 0
    assert config("set", "node.labels", "zone=eu,tier=edge").returncode == 0
    assert config("get", "Node.Compute.Capacity.CPU").stdout.strip() == "1500"
    assert config("get", "Node.Labels").stdout.strip() == "zone=eu,tier=edge"
    listed = json.loads(config("list", "-o", "json").stdout)
    assert {row["Key"] for row in listed} >= set(FLAG_TO_PROPERTY.values())
    bad = config("set", "Node.Compute.Capacity.Memory", "lots")
    assert bad.returncode == 2 and "Memory" in bad.stderr
    unknown = config("get", "Node.Compute.Capacity.CPUs")
    assert unknown.returncode == 2 and "did you mean Node.Compute.Capacity.CPU" in unknown.stderr
    peer = start_peer(0, tmp_path, [])  # --data-dir holds config.yaml: serve reads it
    try:
        with ApiClient(peer.api) as client:
            info = client.agent_node()
        assert info["Labels"]["zone"] == "eu" and info["ComputeNodeInfo"]["MaxCapacity"]["CPU"] == 1.5
    finally:
        stop_peer(peer)


def test_devstack_stops_its_peers_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "p2pnode", "devstack", "--nodes", "2", "--data-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = [tmp_path / f"node-{i}" / "node.json" for i in range(2)]
        eventually(lambda: all(path.exists() for path in ready), 90, "both peers up")
        apis = [json.loads(path.read_text())["API"] for path in ready]
        eventually(lambda: all(httpx.get(api + "/api/v1/agent/alive").status_code == 200 for api in apis), 30,
                   "both APIs answer")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        for api in apis:
            with pytest.raises(httpx.TransportError):
                httpx.get(api + "/api/v1/agent/alive", timeout=2)
        assert not any(path.exists() for path in ready)  # each peer removes it on a clean stop
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---------------------------------------------------------------- live logs


def test_logs_stream_live_through_another_peer_and_remain_after_stop(peers: list[Peer]) -> None:
    with ApiClient(peers[0].api) as submitter, ApiClient(peers[2].api) as watcher:
        job = on("1", wasm_job(data_url(TICKER_WAT), job_type="service", timeout=0))  # a service had no logs at all
        del job["Tasks"][0]["ResultPaths"]
        job_id = submitter.submit(job)["JobID"]
        pieces: list[dict[str, Any]] = []
        states_seen: list[str] = []
        for piece in watcher.logs(job_id, follow=True):
            pieces.append(piece)
            states_seen.append(watcher.get_job(job_id)["Job"]["State"]["StateType"])
            if sum(p["Line"].count("tick") for p in pieces) >= 3:
                break
        assert all(piece["NodeID"] == peers[1].node_id and piece["Type"] == "stdout" for piece in pieces)
        assert states_seen[0] == "Running"  # the first tick came while the job ran
        submitter.stop_job(job_id, "seen enough")
        submitter.wait(job_id, timeout=30)
        kept = "".join(p["Line"] for p in watcher.logs(job_id))
        assert kept.count("tick") >= 3 and set(kept.split()) == {"tick"}


async def test_the_reference_websocket_logs_route(peers: list[Peer]) -> None:
    with ApiClient(peers[0].api) as client:
        job_id = client.submit(wasm_job(data_url(HELLO_WAT), "websocket"))["JobID"]
        await trio.to_thread.run_sync(lambda: client.wait(job_id, timeout=60))
    url = peers[1].api.replace("http://", "ws://") + f"/api/v1/orchestrator/jobs/{job_id}/logs?follow=true"
    messages = []
    async with trio_websocket.open_websocket_url(url) as socket:
        try:
            while True:
                messages.append(json.loads(await socket.get_message()))
        except trio_websocket.ConnectionClosed as closed:
            assert closed.reason.code == 1000
    assert messages and all(set(m) == {"value"} for m in messages)
    assert "".join(m["value"]["Line"] for m in messages if m["value"]["Type"] == 1) == "hello, websocket!\n"


# ---------------------------------------------------------------- held bids


def _held(client: ApiClient, job_id: str) -> dict[str, Any]:
    items = [b for b in client.bids(held_only=True)["Items"] if b["JobID"] == job_id]
    return items[0] if items else {}


def test_a_held_bid_waits_for_the_operator_who_approves(peers: list[Peer], tmp_path: Path) -> None:
    with ApiClient(peers[0].api) as submitter, ApiClient(peers[2].api) as operator:
        job = on("2", wasm_job(data_url(HELLO_WAT), "held"))
        job["Name"] = "held-approve"
        job_id = submitter.submit(job)["JobID"]
        held = eventually(lambda: _held(operator, job_id), 30, "the bid held on peer 2")
        assert held["Reason"] == "the operator looks at it"
        listing = cli(peers[2], "bid", "list")
        assert held["ExecutionID"] in listing.stdout
        assert submitter.get_job(job_id)["Job"]["State"]["StateType"] == "Pending"  # slow is not no
        approved = cli(peers[2], "bid", "approve", held["ExecutionID"])
        assert approved.returncode == 0, approved.stderr
        final = submitter.wait(job_id, timeout=60)
        assert final["Job"]["State"]["StateType"] == "Completed"
        again = httpx.post(peers[2].api + f"/api/v1/compute/bids/{held['ExecutionID']}", json={"Accept": False})
        assert again.status_code == 409
        unknown = httpx.post(peers[2].api + "/api/v1/compute/bids/e-nope", json={"Accept": True})
        assert unknown.status_code == 404


def test_a_held_bid_the_operator_rejects_declines_with_the_reason(peers: list[Peer]) -> None:
    with ApiClient(peers[0].api) as submitter, ApiClient(peers[2].api) as operator:
        job = on("2", wasm_job(data_url(HELLO_WAT), "held"))
        job["Name"] = "held-reject"
        job_id = submitter.submit(job)["JobID"]
        held = eventually(lambda: _held(operator, job_id), 30, "the bid held on peer 2")
        rejected = cli(peers[2], "bid", "reject", held["ExecutionID"], "--reason", "not on my watch")
        assert rejected.returncode == 0, rejected.stderr
        final = submitter.wait(job_id, timeout=60)
        assert final["Job"]["State"]["StateType"] == "Failed"
        messages = [e["ComputeState"]["Message"] for e in final["Executions"]["Items"]]
        assert any("not on my watch" in message for message in messages)
    log = (peers[2].data_dir / "node.log").read_text()
    assert "declined job " + job_id in log and "not on my watch" in log


# ---------------------------------------------------------------- retries


def test_a_trapping_module_runs_once_and_fails(peers: list[Peer]) -> None:
    with ApiClient(peers[0].api) as client:
        job_id = client.submit(wasm_job(data_url(TRAP_WAT)))["JobID"]
        final = client.wait(job_id, timeout=60)
        assert final["Job"]["State"]["StateType"] == "Failed"
        ran = [e for e in final["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Failed"]
        assert len(ran) == 1 and "trap" in ran[0]["ComputeState"]["Message"]
        history = client.history(job_id)["Items"]
        notes = [h["Event"]["Message"] for h in history if h["Event"]["Topic"] == "Retry"]
        assert len(notes) == 1 and "the job's own failure" in notes[0] and "not retried" in notes[0]


def test_an_input_that_one_node_cannot_fetch_is_retried_elsewhere(peers: list[Peer]) -> None:
    """A node-specific refusal: localDirectory inputs are allowed on no peer here."""
    with ApiClient(peers[0].api) as client:
        job = wasm_job(data_url(HELLO_WAT), "unused")
        job["Tasks"][0]["InputSources"] = [{"Target": "/data/missing", "Source": {"Type": "url",
                                            "Params": {"URL": "http://127.0.0.1:9/nothing"}}}]
        job_id = client.submit(job)["JobID"]
        final = client.wait(job_id, timeout=90)
        failed = [e for e in final["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Failed"]
        assert len(failed) > 1  # tried again, on other nodes too
        notes = [h["Event"]["Message"] for h in client.history(job_id)["Items"] if h["Event"]["Topic"] == "Retry"]
        assert notes and all("a failure of the node, not of the job" in note for note in notes)


def test_an_unknown_bid_or_job_is_a_clear_error(peers: list[Peer]) -> None:
    with ApiClient(peers[1].api) as client, pytest.raises(ApiClientError) as raised:
        client.decide_bid("e-unknown", True)
    assert raised.value.status == 404 and "bid list" in raised.value.hint
