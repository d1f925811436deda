"""The client API and the CLI against one real node process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import wasmtime
from click.testing import CliRunner

from p2pnode.cli import main
from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import SLEEPER_WAT, data_url, eventually, wasm_job

HELLO_WAT = (Path(__file__).resolve().parent.parent / "examples" / "hello.wat").read_text()
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    started = start_peer(0, tmp_path_factory.mktemp("api") / "node", [], ["--labels", "zone=test"])
    try:
        yield started
    finally:
        stop_peer(started)


@pytest.fixture(scope="module")
def client(peer: Peer) -> Iterator[ApiClient]:
    with ApiClient(peer.api) as api:
        yield api


def cli(peer: Peer, *arguments: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(arguments), input=input, env={"P2PNODE_API": peer.api, "COLUMNS": "200"})
    return result.exit_code, result.output


def test_agent_routes(client: ApiClient, peer: Peer) -> None:
    assert client.alive() == {"Status": "OK"}
    assert client.version()["BuildVersionInfo"]["GitVersion"].startswith("v")
    me = client.agent_node()
    assert me["NodeID"] == peer.node_id  # the reference's models.NodeInfo
    assert me["Labels"]["zone"] == "test"


def test_openapi_lists_the_routes(peer: Peer) -> None:
    document = httpx.get(peer.api + "/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/orchestrator/jobs" in document["paths"]
    assert "put" in document["paths"]["/api/v1/orchestrator/jobs"]


def test_a_bad_job_is_refused_with_the_reasons(peer: Peer) -> None:
    response = httpx.put(peer.api + "/api/v1/orchestrator/jobs", json={"Job": {"Type": "batch", "Constraint": []}})
    assert response.status_code == 400
    body = response.json()
    assert "Constraints" in body["error"] and "Tasks" in body["error"] and body["hint"]
    response = httpx.put(peer.api + "/api/v1/orchestrator/jobs", content=b"{not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


def test_unknown_routes_and_jobs_answer_json(peer: Peer) -> None:
    response = httpx.get(peer.api + "/api/v1/orchestrator/jobs/j-nope")
    assert response.status_code == 404 and "j-nope" in response.json()["error"]
    response = httpx.get(peer.api + "/api/v1/nowhere")
    assert response.status_code == 404 and response.json()["hint"]


def test_submit_describe_list_and_page(client: ApiClient, peer: Peer) -> None:
    url = data_url(HELLO_WAT)
    ids = []
    for name in ("one", "two", "three"):
        job = wasm_job(url, name)
        job["Labels"] = {"batch": "paging", "name": name}
        answer = client.submit(job)
        assert answer["JobID"].startswith("j-") and answer["EvaluationID"]
        ids.append(answer["JobID"])
    for job_id in ids:
        assert client.wait(job_id, timeout=60)["Job"]["State"]["StateType"] == "Completed"
    described = client.get_job(ids[0][:14], include="executions,history")  # a unique prefix works
    assert described["Job"]["ID"] == ids[0]
    assert described["Executions"]["Items"][0]["RunOutput"]["Stdout"] == "hello, one!\n"
    assert [e["JobState"]["New"] for e in described["History"]["Items"] if "JobState" in e] == ["Pending", "Running", "Completed"]
    first = client.list_jobs(labels="batch=paging", limit=2)
    assert len(first["Items"]) == 2 and first["NextToken"]
    rest = client.list_jobs(labels="batch=paging", limit=2, next_token=first["NextToken"])
    assert len(rest["Items"]) == 1 and rest["NextToken"] == ""
    assert {j["ID"] for j in first["Items"] + rest["Items"]} == set(ids)
    assert client.list_jobs(namespace="elsewhere")["Items"] == []
    results = client.results(ids[1])["Items"]
    assert results and results[0]["Type"] == "local"


def test_cli_validate_run_describe_and_get(peer: Peer, tmp_path: Path) -> None:
    job_file = Path(__file__).resolve().parent.parent / "examples" / "hello-wasm.yaml"
    module = "-V", f"module={data_url(HELLO_WAT)}"
    code, output = cli(peer, "job", "validate", str(job_file), *module, "-o", "json")
    assert code == 0 and json.loads(output)["Name"] == "hello-wasm"
    code, output = cli(peer, "job", "run", str(job_file), *module, "-V", "name=cli", "--id-only")
    assert code == 0, output
    job_id = output.strip().splitlines()[-1]
    code, output = cli(peer, "job", "describe", job_id[:12])
    assert code == 0 and "Completed" in output
    code, output = cli(peer, "job", "executions", job_id, "-o", "json")
    assert code == 0 and json.loads(output)["Items"][0]["ComputeState"]["StateType"] == "Completed"
    code, output = cli(peer, "job", "history", job_id, "-o", "yaml")
    assert code == 0 and "JobState" in output
    code, output = cli(peer, "job", "logs", job_id)
    assert code == 0 and "hello, cli!" in output
    code, output = cli(peer, "job", "get", job_id, "--output-dir", str(tmp_path))
    assert code == 0
    assert (next(tmp_path.iterdir()) / "outputs" / "greeting.txt").read_text() == "hello, cli!\n"
    code, output = cli(peer, "job", "list", "-o", "json")
    assert code == 0 and any(item["ID"] == job_id for item in json.loads(output)["Items"])
    code, output = cli(peer, "node", "list")
    assert code == 0 and peer.node_id in output


def test_cli_reads_stdin_and_reports_bad_files(peer: Peer) -> None:
    code, output = cli(peer, "job", "validate", "-", input="Type: batch\nTasks: []\n")
    assert code == 1 and "exactly one task" in output
    code, output = cli(peer, "job", "validate", "/no/such/file.yaml")
    assert code == 2 and "no such file" in output
    code, output = cli(peer, "job", "validate", "-", "-V", "novalue", input="Type: batch\n")
    assert code == 2 and "key=value" in output


def test_wasm_run_shortcut(peer: Peer, tmp_path: Path) -> None:
    module = tmp_path / "hello.wasm"
    module.write_bytes(wasmtime.wat2wasm(HELLO_WAT))
    code, output = cli(peer, "wasm", "run", str(module), "shortcut")
    assert code == 0, output
    assert "hello, shortcut!" in output


def test_stop_a_running_service(client: ApiClient, peer: Peer) -> None:
    job = wasm_job(data_url(SLEEPER_WAT), "9", job_type="service", count=1, timeout=0)
    del job["Tasks"][0]["ResultPaths"]
    job_id = client.submit(job)["JobID"]
    eventually(lambda: any(e["ComputeState"]["StateType"] == "Running" for e in client.executions(job_id)["Items"]),
               30, "the service running")
    code, output = cli(peer, "job", "stop", job_id, "--reason", "test over")
    assert code == 0 and "Stopped" in output
    job = client.get_job(job_id, include="executions")
    assert job["Job"]["State"] == {"StateType": "Stopped", "Message": "test over"}
    assert all(e["ComputeState"]["StateType"] == "Cancelled" for e in job["Executions"]["Items"]
               if e["ComputeState"]["StateType"] not in ("BidRejected", "AskForBidRejected"))


def test_the_cli_says_how_to_reach_a_node() -> None:
    result = CliRunner().invoke(main, ["job", "list", "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach a node" in result.output and "p2pnode serve" in result.output
