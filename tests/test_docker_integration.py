"""Docker jobs on real peers (`p2pnode serve` processes on loopback) and a
real, private Docker daemon: what a user submits reaches the container, its
limits hold, and no container outlives its run, not even a killed node's."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.client import ApiClientError
from p2pnode.devstack import stop_peer
from protocols.jobspec import parse_job
from tests.docker_daemon import ECHO_IMAGE, IMAGE, PrivateDockerd
from tests.integration_support import eventually
from tests.test_integration import Network

pytestmark = pytest.mark.timeout(300)
# The seed examples sit beside the checkout (as tests/test_jobspec.py finds them), or in the shared folder.
EXAMPLES = next((path for path in (Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples",
                                   Path("/work/shared/spec/examples")) if path.is_dir()), None)


@pytest.fixture(scope="module")
def peers(dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Network, Path]]:
    """Three peers on the private daemon; peer 2 alone accepts networked jobs.
    Each is labelled name=pN, and all as the seed examples' constraints want."""
    base = tmp_path_factory.mktemp("docker-peers")
    shared = base / "shared"
    shared.mkdir()
    network = Network(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", dockerd.host)
        patch.setenv("P2PNODE_NODE_COMPUTE_ALLOWEDLOCALPATHS", str(shared))
        try:
            for index in range(3):
                start(network, index)
            network.converge(3)
            yield network, shared
        finally:
            for peer in network.peers:
                stop_peer(peer)


def start(network: Network, index: int) -> None:
    flags = ["--labels", f"name=p{index}", "--labels", "service=WebService", "--labels", "region=us-west-2"]
    if index == 2:
        flags.append("--job-selection-accept-networked")
    network.start(index, *flags)


@pytest.fixture(autouse=True)
def no_container_left(dockerd: PrivateDockerd) -> Iterator[None]:
    yield
    eventually(lambda: not dockerd.containers(), 20, "every container removed")


def docker_job(script: str, *, count: int = 1, name: str | None = None, **task: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "Name": "docker-integration",
        "Type": "batch",
        "Count": count,
        "Tasks": [{
            "Engine": {"Type": "docker", "Params": {"Image": IMAGE, "Entrypoint": ["sh", "-c"], "Parameters": [script]}},
            "Publisher": {"Type": "local"},
            "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
            "Resources": {"CPU": "250m", "Memory": "64Mb"},
            "Timeouts": {"TotalTimeout": 60},
            **task,
        }],
    }
    if name is not None:
        job["Constraints"] = [{"Key": "name", "Operator": "=", "Values": [name]}]
    return job


def messages(final: dict[str, Any]) -> str:
    """The job's message and every execution's, to look for a reason in."""
    parts = [final["Job"]["State"]["Message"]]
    parts += [e["ComputeState"].get("Message", "") for e in final["Executions"]["Items"]]
    return " | ".join(parts)


def test_batch_of_two_gets_env_workdir_entrypoint_and_parameters_and_its_results_download(
    peers: tuple[Network, Path], tmp_path: Path
) -> None:
    network, shared = peers
    data = shared / "batch-data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    script = ('echo "$GREETING from $(pwd) as $0" | tee /outputs/greeting.txt; cat /data/in.txt > /outputs/copy.txt; '
              '(echo changed > /data/in.txt) 2>/dev/null && echo wrote || echo read-only')
    job = docker_job(script, count=2)
    task = job["Tasks"][0]
    task["Engine"]["Params"].update(Parameters=[script, "the-zeroth"], WorkingDirectory="/tmp",
                                    EnvironmentVariables=["GREETING = hello", "UNUSED=1"])
    task["InputSources"] = [{"Target": "/data", "Source": {"Type": "localDirectory", "Params": {"SourcePath": str(data)}}}]
    with network.client(0) as client:
        job_id = client.submit(job)["JobID"]
        final = client.wait(job_id, timeout=90)
        assert final["Job"]["State"]["StateType"] == "Completed", messages(final)
        done = [e for e in final["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Completed"]
        assert sorted(e["PartitionIndex"] for e in done) == [0, 1]  # on two nodes, or one if the other was slow to bid
        for execution in done:
            assert execution["RunOutput"]["Stdout"] == "hello from /tmp as the-zeroth\nread-only\n"
    # `job get`, as a user types it, downloads both partitions' results from the peers that ran them.
    got = subprocess.run([sys.executable, "-m", "p2pnode", "job", "get", job_id, "--api", network.peers[0].api,
                          "--output-dir", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    files = [Path(line) for line in got.stdout.splitlines()]
    greetings = [path.read_text() for path in files if path.name == "greeting.txt"]
    copies = [path.read_text() for path in files if path.name == "copy.txt"]
    assert greetings == ["hello from /tmp as the-zeroth\n"] * 2
    assert copies == ["input\n"] * 2
    assert (data / "in.txt").read_text() == "input\n"


def test_over_memory_fails_with_a_clear_reason(peers: tuple[Network, Path]) -> None:
    network, _ = peers
    job = docker_job("exec dd if=/dev/zero of=/dev/null bs=64M count=1", Resources={"CPU": "250m", "Memory": "16Mb"})
    with network.client(1) as client:
        final = client.wait(client.submit(job)["JobID"], timeout=90)
    assert final["Job"]["State"]["StateType"] == "Failed"
    assert "exceeded its memory limit of 16 MiB" in messages(final)


def test_total_timeout_kills_a_sleeping_container(peers: tuple[Network, Path]) -> None:
    network, _ = peers
    job = docker_job("sleep 120", Timeouts={"TotalTimeout": 2})
    with network.client(0) as client:
        final = client.wait(client.submit(job)["JobID"], timeout=90)
    assert final["Job"]["State"]["StateType"] == "Failed"
    assert "TotalTimeout" in messages(final) or "timed out" in messages(final).lower(), messages(final)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_network_none_cannot_reach_a_server_on_the_host(peers: tuple[Network, Path]) -> None:
    network, _ = peers
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        script = f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {port} | head -1; ip -o link | cut -d' ' -f2"
        with network.client(0) as client:
            final = client.wait(client.submit(docker_job(script))["JobID"], timeout=90)
    finally:
        server.shutdown()
        server.server_close()
    assert final["Job"]["State"]["StateType"] == "Completed", messages(final)
    (execution,) = [e for e in final["Executions"]["Items"] if e["ComputeState"]["StateType"] == "Completed"]
    assert execution["RunOutput"]["Stdout"] == "lo:\n"  # no answer, and no interface but its own loopback
    assert "can't connect" in execution["RunOutput"]["stderr"]  # the reference spells it lower-case


def example(name: str, shared: Path) -> dict[str, Any]:
    """A seed example with a local image, its templates filled, its local
    paths under `shared`, the local publisher (the network has no IPFS here)
    and a short QueueTimeout."""
    assert EXAMPLES is not None
    text = (EXAMPLES / f"{name}.yaml").read_text()
    text = re.sub(r"Image: .*", f"Image: {ECHO_IMAGE}", text)
    text = text.replace("/data/log-orchestration", str(shared / "log-orchestration"))
    variables = {"query": "status:500", "start-time": "2024-01-01", "end-time": "2024-01-02",
                 "OpenSearchEndpoint": "http://127.0.0.1:9", "AccessLogBucket": "logs", "AWSRegion": "us-west-2"}
    document = parse_job(text, variables=variables).spec.to_document()
    document["Tasks"][0]["Publisher"] = {"Type": "local"}
    document["Tasks"][0]["Timeouts"]["QueueTimeout"] = 1  # decline now rather than queue for 101 s
    return document


def test_the_seed_examples_run_or_are_declined_for_the_right_reason(peers: tuple[Network, Path]) -> None:
    if EXAMPLES is None:
        pytest.skip("the seed examples (shared/spec/examples) are not beside this checkout")
    network, shared = peers
    for folder in ("logs", "state"):
        (shared / "log-orchestration" / folder).mkdir(parents=True, exist_ok=True)
    with network.client(0) as client:
        # The service wants arm64 nodes; these are x86-64 (amd64).
        final = client.wait(client.submit(example("service", shared))["JobID"], timeout=60)
        assert final["Job"]["State"]["StateType"] == "Failed"
        assert "constraint 'Architecture = arm64' does not hold" in messages(final)
        # The batch wants an HTTP network (only the third node accepts networked jobs) and an
        # IPFS input that no peer holds (nothing reaches a public IPFS network here).
        final = client.wait(client.submit(example("batch", shared))["JobID"], timeout=90)
        assert final["Job"]["State"]["StateType"] == "Failed"
        reasons = messages(final)
        assert ("could not fetch QmSYE8dVx6RTdDFFhBu51JjFG1fwwPdUJoXZ4ZNXvfoK2V" in reasons
                or "cannot fetch ipfs inputs" in reasons), reasons
        assert {e["NodeID"] for e in final["Executions"]["Items"]} <= {network.peers[2].node_id}
        # The ops job wants an HTTP network limited to domains: two nodes refuse networked
        # jobs; the third runs it behind its egress proxy, with the image's entrypoint.
        job_id = client.submit(example("ops", shared))["JobID"]
        accepting = network.peers[2]
        execution = eventually(lambda: running(client, job_id), 60, "the ops job running")
        assert execution["NodeID"] == accepting.node_id
        assert [e["NodeID"] for e in client.executions(job_id)["Items"]] == [accepting.node_id]
        stdout = accepting.data_dir / "executions" / execution["ID"] / "stdout"
        eventually(lambda: stdout.exists() and stdout.read_text(), 30, "the ops job's output")
        assert stdout.read_text() == "--query status:500 --start-time 2024-01-01 --end-time 2024-01-02\n"
        client.stop_job(job_id, "test done")
        eventually(lambda: client.get_job(job_id)["Job"]["State"]["StateType"] == "Stopped", 30, "the ops job stopped")
        # The daemon (Full network) runs on the one node that accepts networked jobs,
        # with the image's own entrypoint and the filled-in parameters.
        job_id = client.submit(example("daemon", shared))["JobID"]
        execution = eventually(lambda: running(client, job_id), 60, "the daemon running")
        assert execution["NodeID"] == accepting.node_id
        stdout = accepting.data_dir / "executions" / execution["ID"] / "stdout"
        eventually(lambda: stdout.exists() and stdout.read_text(), 30, "the daemon's output")
        assert stdout.read_text() == "--query status:500 --start-time 2024-01-01 --end-time 2024-01-02\n"
        client.stop_job(job_id, "test done")
        eventually(lambda: client.get_job(job_id)["Job"]["State"]["StateType"] == "Stopped", 30, "the daemon stopped")


def running(client: Any, job_id: str) -> dict[str, Any] | None:
    """The job's running execution, if it has one now."""
    items = client.executions(job_id)["Items"]
    return next((e for e in items if e["ComputeState"]["StateType"] == "Running"), None)


def test_docker_run_prints_hello(peers: tuple[Network, Path]) -> None:
    network, _ = peers
    api = network.peers[0].api
    done = subprocess.run([sys.executable, "-m", "p2pnode", "docker", "run", "--api", api, IMAGE, "--", "echo", "hello"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hello" in done.stdout.splitlines()


def test_a_killed_nodes_container_is_removed_when_it_restarts(peers: tuple[Network, Path], dockerd: PrivateDockerd) -> None:
    network, _ = peers
    victim = next(peer for peer in network.peers if peer.index == 2)
    with network.client(0) as client:
        # An HTTP network: the job's container and its network's holder container are both left.
        job = docker_job("sleep 300", name="p2", Timeouts={"TotalTimeout": 600},
                         Network={"Type": "HTTP", "Domains": ["example.com"]})
        job_id = client.submit(job)["JobID"]
        eventually(lambda: len(dockerd.containers()) == 2, 60, "the container and its holder running")
        network.kill(victim.node_id)
        assert len(dockerd.containers()) == 2, "the containers outlive their killed node"
        start(network, 2)
        eventually(lambda: not dockerd.containers(), 30, "the leftover container removed at restart")
        try:
            client.stop_job(job_id, "test done")  # in case it runs again on the restarted node
        except ApiClientError:
            pass  # it failed already: its only node died
