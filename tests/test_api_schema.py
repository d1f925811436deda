"""The API against its own OpenAPI document (schemathesis, bounded, on a live
peer) and against the reference network's names for the same things."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, given, settings

from p2pnode.client import ApiClient
from p2pnode.devstack import Peer, start_peer, stop_peer
from tests.integration_support import data_url, wasm_job

HELLO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hi\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))
"""
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    started = start_peer(0, tmp_path_factory.mktemp("schema") / "node", [])
    try:
        yield started
    finally:
        stop_peer(started)


@pytest.fixture(scope="module")
def finished_job(peer: Peer) -> dict[str, Any]:
    with ApiClient(peer.api) as client:
        job_id = client.submit(wasm_job(data_url(HELLO_WAT)))["JobID"]
        return client.wait(job_id, timeout=60)


# A job the schema allows may still be refused (a module that is not a data:
# URL, a constraint no node meets): the server checks more than a schema can
# say, so "schema-valid data is accepted" is not among the checks.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]


def test_every_route_answers_as_its_schema_says(peer: Peer, finished_job: dict[str, Any]) -> None:
    """A bounded schemathesis run against the live peer: for each operation,
    ten generated requests (valid and not); no 5xx, and every answer,
    errors too, matches the document."""
    api = schemathesis.openapi.from_url(peer.api + "/api/v1/openapi.json")
    api.config.update(base_url=peer.api)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 18
    for operation in operations:

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            if case.operation.path.endswith("/logs"):
                case.query = {**(case.query or {}), "follow": "false"}  # a followed live job never ends
            case.call_and_validate(timeout=30, checks=CHECKS)

        check()


def test_the_document_types_every_operation(peer: Peer) -> None:
    document = httpx.get(peer.api + "/api/v1/openapi.json").json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if path.endswith("openapi.json"):
                continue
            assert "$ref" in operation["responses"]["200"]["content"].popitem()[1]["schema"], (method, path)
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert names == {part.strip("{}") for part in path.split("/") if part.startswith("{")}
    put = document["paths"]["/api/v1/orchestrator/jobs"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PutJobRequest"}
    listing = document["paths"]["/api/v1/orchestrator/jobs"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "next_token", "order_by", "reverse", "namespace"}


def test_a_wrong_method_says_which_are_allowed(peer: Peer) -> None:
    response = httpx.post(peer.api + "/api/v1/orchestrator/jobs/j-1")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "DELETE"}


# The reference's field names, read from its published swagger document
# (bacalhau-project/bacalhau, webui/lib/api/schema/swagger.json at e28960c7):
# apimodels.ListNodesResponse, GetNodeResponse, models.NodeState, NodeInfo,
# ComputeNodeInfo, Resources, Job, Execution, RunCommandResult, JobHistory,
# IsAliveResponse, BuildVersionInfo. Only the fields both networks have are listed.
REFERENCE = {
    "ListNodesResponse": {"Nodes", "NextToken"},
    "GetNodeResponse": {"Node"},
    "NodeState": {"Info", "Membership", "Connection"},
    "NodeInfo": {"NodeID", "NodeType", "Labels", "BacalhauVersion", "ComputeNodeInfo"},
    "ComputeNodeInfo": {"ExecutionEngines", "Publishers", "StorageSources", "MaxCapacity", "AvailableCapacity"},
    "Resources": {"CPU", "Memory", "Disk", "GPU"},
    "Job": {"ID", "Name", "Namespace", "Type", "Priority", "Count", "Constraints", "Meta", "Labels", "Tasks", "State",
            "Version", "Revision", "CreateTime", "ModifyTime"},
    "ResourcesConfig": {"CPU", "Memory", "Disk", "GPU"},
    "Execution": {"ID", "JobID", "NodeID", "PartitionIndex", "ComputeState", "DesiredState", "Revision", "CreateTime",
                  "ModifyTime", "RunOutput", "PublishedResult"},
    "RunCommandResult": {"Stdout", "stderr", "ExitCode", "ErrorMsg", "StdoutTruncated", "StderrTruncated"},
    "JobHistory": {"Type", "JobID", "ExecutionID", "Time", "Event", "JobState"},
    "IsAliveResponse": {"Status"},
    "BuildVersionInfo": {"GitVersion", "Major", "Minor"},
}


def test_responses_carry_the_references_fields_under_its_names(peer: Peer, finished_job: dict[str, Any]) -> None:
    with ApiClient(peer.api) as client:
        nodes = client.nodes()
        node = client.node(peer.node_id[:12])
        history = client.history(finished_job["Job"]["ID"])["Items"]
        alive, version = client.alive(), client.version()["BuildVersionInfo"]
    state = nodes["Nodes"][0]
    info = state["Info"]
    job = finished_job["Job"]
    execution = finished_job["Executions"]["Items"][0]
    seen = {
        "ListNodesResponse": nodes, "GetNodeResponse": node, "NodeState": state, "NodeInfo": info,
        "ComputeNodeInfo": info["ComputeNodeInfo"], "Resources": info["ComputeNodeInfo"]["MaxCapacity"],
        "Job": job, "ResourcesConfig": job["Tasks"][0]["Resources"], "Execution": execution,
        "RunCommandResult": execution["RunOutput"], "JobHistory": history[0], "IsAliveResponse": alive,
        "BuildVersionInfo": version,
    }
    for name, fields in REFERENCE.items():
        assert fields <= set(seen[name]), (name, fields - set(seen[name]))
    assert node["Node"]["Info"]["NodeID"] == peer.node_id
    resources = info["ComputeNodeInfo"]["MaxCapacity"]
    assert isinstance(resources["CPU"], float) and resources["CPU"] < 1000  # cores, not millicores
    assert isinstance(resources["Memory"], int)  # bytes, as models.Resources has it
    assert all(isinstance(job["Tasks"][0]["Resources"][key], str) for key in ("CPU", "Memory"))  # as the user wrote
    assert job["State"]["StateType"] == "Completed" and execution["ComputeState"]["StateType"] == "Completed"
    healthz = httpx.get(peer.api + "/api/v1/healthz").json()
    assert healthz["Status"] == "OK" and healthz["NodeID"] == peer.node_id
