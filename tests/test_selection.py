"""The node's job selection policy: every decline, the accept path, probes, and
the reading of probe replies."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import yaml

from protocols.events import ProbeVerdict
from protocols.jobspec import JobDefaults, JobSpec, parse_job
from protocols.messages import Capacity, Locality, PolicySummary
from protocols.selection import (
    ACCEPT,
    Accept,
    Decline,
    LocalNode,
    Probe,
    SelectionPolicy,
    after_probe,
    decide,
    exec_probe_verdict,
    parse_http_probe_reply,
    probe_document,
)

GiB = 1 << 30
NODE = LocalNode(
    node_id="node-1",
    labels={"region": "eu-west", "Operating-System": "linux"},
    free=Capacity(cpu=2000, memory=4 * GiB, disk=10 * GiB, gpu=0),
    engines=frozenset({"docker", "wasm"}),
    publishers=frozenset({"ipfs", "local"}),
    storages=frozenset({"ipfs", "localDirectory", "url", "inline"}),
    local_data=frozenset({"QmHeld", "/data/held"}),
)
IPFS_INPUT = {"Target": "/file.txt", "Source": {"Type": "ipfs", "Params": {"CID": "QmHeld"}}}


def job(task: dict[str, Any] | None = None, **top: Any) -> JobSpec:
    """A docker job reading one held ipfs input, with `task` and `top` fields
    overriding the defaults."""
    base_task: dict[str, Any] = {
        "Name": "main",
        "Engine": {"Type": "docker", "Params": {"Image": "ubuntu:latest", "Entrypoint": ["cat", "/file.txt"]}},
        "Publisher": {"Type": "ipfs"},
        "InputSources": [IPFS_INPUT],
        "Resources": {"CPU": "500m", "Memory": "1Gb", "Disk": "1Gb"},
        "Network": {"Type": "None"},
    }
    base_task.update(task or {})
    document = {"Type": "batch", "Count": 1, "Tasks": [base_task], **top}
    return parse_job(yaml.safe_dump(document)).spec


WASM = {
    "Engine": {
        "Type": "wasm",
        "Params": {
            "EntryModule": {"Target": "/main.wasm", "Source": {"Type": "inline", "Params": {"URL": "data:,x"}}},
            "Entrypoint": "_start",
            "Parameters": ["a", "b"],
            "EnvironmentVariables": ["GREETING=hello"],
        },
    }
}


def url_input(url: str = "https://example.org/x") -> dict[str, Any]:
    return {"Target": "/in", "Source": {"Type": "url", "Params": {"URL": url}}}


DECLINES = [
    ("no engine", {}, {"engines": frozenset({"wasm"})}, SelectionPolicy(), ["docker engine", "wasm"]),
    ("no publisher", {"Publisher": {"Type": "s3", "Params": {"Bucket": "b", "Key": "k", "Region": "r"}}}, {}, SelectionPolicy(), ["publish to s3", "ipfs, local"]),
    ("unfetchable input", {"InputSources": [{"Target": "/in", "Source": {"Type": "s3", "Params": {"Bucket": "b", "Key": "k"}}}]}, {}, SelectionPolicy(), ["fetch s3 inputs"]),
    ("unfetchable wasm module", WASM, {"storages": frozenset({"ipfs"})}, SelectionPolicy(), ["fetch inline inputs"]),
    ("too little cpu", {"Resources": {"CPU": "3"}}, {}, SelectionPolicy(), ["not enough CPU: the job needs 3 cores, this node has 2 cores free"]),
    ("too little memory", {"Resources": {"Memory": "8Gb"}}, {}, SelectionPolicy(), ["not enough memory", "has 4 GiB free"]),
    ("too little disk", {"Resources": {"Disk": "20Gb"}}, {}, SelectionPolicy(), ["not enough disk", "has 10 GiB free"]),
    ("no gpu", {"Resources": {"GPU": "1"}}, {}, SelectionPolicy(), ["not enough GPU: the job needs 1, this node has 0 free"]),
    ("full network", {"Network": {"Type": "Full"}}, {}, SelectionPolicy(), ["network access (Full)", "--job-selection-accept-networked"]),
    ("http network", {"Network": {"Type": "HTTP", "Domains": ["example.org"]}}, {}, SelectionPolicy(), ["network access (HTTP)"]),
    ("stateless", {"InputSources": []}, {}, SelectionPolicy(reject_stateless=True), ["no input data", "reject-stateless"]),
    ("ipfs data elsewhere", {"InputSources": [{"Target": "/f", "Source": {"Type": "ipfs", "Params": {"CID": "QmOther"}}}]}, {}, SelectionPolicy(locality=Locality.LOCAL), ["'QmOther'", "data-locality anywhere"]),
    ("directory elsewhere", {"InputSources": [{"Target": "/d", "Source": {"Type": "localDirectory", "Params": {"SourcePath": "/data/other"}}}]}, {}, SelectionPolicy(locality=Locality.LOCAL), ["'/data/other'"]),
    ("url is never local", {"InputSources": [url_input()]}, {}, SelectionPolicy(locality=Locality.LOCAL), ["url inputs", "never local"]),
]


@pytest.mark.parametrize(("why", "task", "node", "policy", "phrases"), DECLINES, ids=[row[0] for row in DECLINES])
def test_each_failed_check_declines_saying_what_failed(
    why: str, task: dict[str, Any], node: dict[str, Any], policy: SelectionPolicy, phrases: list[str]
) -> None:
    decision = decide(policy, replace(NODE, **node), "job-1", job(task))
    assert isinstance(decision, Decline), why
    for phrase in phrases:
        assert phrase in decision.reason, (phrase, decision.reason)


def test_a_failed_constraint_is_named_with_the_node_labels() -> None:
    constraints = [
        {"Key": "Operating-System", "Operator": "=", "Values": ["linux"]},
        {"Key": "region", "Operator": "in", "Values": ["us-east", "us-west"]},
    ]
    decision = decide(SelectionPolicy(), NODE, "job-1", job(Constraints=constraints))
    assert isinstance(decision, Decline)
    assert "region in us-east,us-west" in decision.reason
    assert "region=eu-west" in decision.reason
    assert "Operating-System =" not in decision.reason


def test_checks_run_in_order_engine_first() -> None:
    spec = job({"Network": {"Type": "Full"}, "Resources": {"CPU": "64"}})
    decision = decide(SelectionPolicy(), replace(NODE, engines=frozenset()), "job-1", spec)
    assert isinstance(decision, Decline) and "docker engine" in decision.reason


ACCEPTS = [
    ("plain job", {}, SelectionPolicy()),
    ("no publisher", {"Publisher": None}, SelectionPolicy()),
    ("matching constraint", {}, SelectionPolicy()),
    ("explicit no network", {"Network": {"Type": "None"}}, SelectionPolicy()),
    ("full network allowed", {"Network": {"Type": "Full"}}, SelectionPolicy(accept_networked=True)),
    ("http network allowed", {**WASM, "Network": {"Type": "HTTP", "Domains": ["a.org"]}}, SelectionPolicy(accept_networked=True)),
    ("http network for docker allowed", {"Network": {"Type": "HTTP", "Domains": ["a.org"]}}, SelectionPolicy(accept_networked=True)),
    ("stateless allowed by default", {"InputSources": []}, SelectionPolicy()),
    ("stateful when stateless rejected", {}, SelectionPolicy(reject_stateless=True)),
    ("held ipfs data, local", {}, SelectionPolicy(locality=Locality.LOCAL)),
    ("held directory, local", {"InputSources": [{"Target": "/d", "Source": {"Type": "localDirectory", "Params": {"SourcePath": "/data/held"}}}]}, SelectionPolicy(locality=Locality.LOCAL)),
    ("url data, anywhere", {"InputSources": [url_input()]}, SelectionPolicy(locality=Locality.ANYWHERE)),
    ("stateless, local", {"InputSources": []}, SelectionPolicy(locality=Locality.LOCAL)),
    ("wasm job", WASM, SelectionPolicy()),
    ("exact fit", {"Resources": {"CPU": "2", "Memory": "4Gb", "Disk": "10Gb"}}, SelectionPolicy()),
]


@pytest.mark.parametrize(("why", "task", "policy"), ACCEPTS, ids=[row[0] for row in ACCEPTS])
def test_a_job_that_passes_every_check_is_accepted(why: str, task: dict[str, Any], policy: SelectionPolicy) -> None:
    spec = job(task, Constraints=[{"Key": "region", "Operator": "==", "Values": ["eu-west"]}])
    assert decide(policy, NODE, "job-1", spec) == ACCEPT, why


def test_probes_run_after_every_other_check_exec_first_then_http() -> None:
    policy = SelectionPolicy(probe_exec="/bin/check --strict", probe_http="http://127.0.0.1:9/probe")
    spec = job()
    first = decide(policy, NODE, "job-1", spec)
    assert first == Probe("exec", "/bin/check --strict", probe_document("node-1", "job-1", spec))
    yes = ProbeVerdict(bid=True, reason="fine")
    assert after_probe(policy, "exec", yes, first.document) == Probe("http", "http://127.0.0.1:9/probe", first.document)
    assert after_probe(policy, "http", yes, first.document) == ACCEPT
    no = ProbeVerdict(bid=False, reason="busy tonight")
    declined = after_probe(policy, "exec", no, first.document)
    assert isinstance(declined, Decline) and "exec probe declined the job: busy tonight" in declined.reason
    assert isinstance(decide(policy, replace(NODE, engines=frozenset()), "job-1", spec), Decline)


def test_a_single_probe_decides_alone() -> None:
    spec = job()
    http_only = SelectionPolicy(probe_http="http://127.0.0.1:9/probe")
    probe = decide(http_only, NODE, "job-1", spec)
    assert isinstance(probe, Probe) and probe.kind == "http"
    assert after_probe(http_only, "http", ProbeVerdict(bid=True, reason="ok")) == ACCEPT
    exec_only = SelectionPolicy(probe_exec="check")
    assert after_probe(exec_only, "exec", ProbeVerdict(bid=True, reason="ok")) == ACCEPT
    assert isinstance(after_probe(exec_only, "exec", ProbeVerdict(bid=False, reason="no")), Decline)


def test_http_probe_after_exec_needs_the_document() -> None:
    policy = SelectionPolicy(probe_exec="check", probe_http="http://127.0.0.1:9/probe")
    decision = after_probe(policy, "exec", ProbeVerdict(bid=True, reason="ok"))
    assert isinstance(decision, Decline) and "document" in decision.reason


def test_policy_summary_and_locality_validation() -> None:
    assert SelectionPolicy().summary() == PolicySummary()
    summary = SelectionPolicy(locality="local", probe_http="http://x", reject_stateless=True).summary()  # type: ignore[arg-type]
    assert summary == PolicySummary(locality=Locality.LOCAL, reject_stateless=True, probes=True)
    with pytest.raises(ValueError, match="'local' or 'anywhere'"):
        SelectionPolicy(locality="nearby")  # type: ignore[arg-type]
    assert Accept() == ACCEPT


def test_probe_document_of_a_docker_job_has_the_reference_shape() -> None:
    spec = job({"Engine": {"Type": "docker", "Params": {"Image": "ubuntu:latest", "Entrypoint": ["cat", "/file.txt"]}}})
    document = probe_document("node-1", "job-1", spec)
    assert document["node_id"] == "node-1" and document["job_id"] == "job-1"
    described = document["spec"]
    assert described["engine"] == "docker"
    assert described["verifier"] == "noop"
    assert described["job_spec_vm"]["image"] == "ubuntu:latest"
    assert described["job_spec_vm"]["entrypoint"] == ["cat", "/file.txt"]
    assert described["inputs"] == [{"engine": "ipfs", "cid": "QmHeld", "path": "/file.txt", "params": {"CID": "QmHeld"}}]
    assert "job_spec_wasm" not in described
    assert document["resources"] == {
        "cpu": 500,
        "memory": spec.task.resources.memory,
        "disk": spec.task.resources.disk,
        "gpu": 0,
    }
    assert json.loads(json.dumps(document)) == document  # plain JSON all the way down


def test_probe_document_of_a_wasm_job_describes_its_modules() -> None:
    spec = job({**WASM, "InputSources": [url_input("https://example.org/data.csv")]})
    described = probe_document("node-1", "job-2", spec)["spec"]
    assert described["engine"] == "wasm" and "job_spec_vm" not in described
    wasm = described["job_spec_wasm"]
    assert wasm["entry_module"]["engine"] == "inline" and wasm["entry_module"]["path"] == "/main.wasm"
    assert wasm["entrypoint"] == "_start"
    assert wasm["parameters"] == ["a", "b"]
    assert wasm["environment_variables"] == {"GREETING": "hello"}
    assert wasm["import_modules"] == []
    assert described["inputs"][0]["engine"] == "url" and described["inputs"][0]["cid"] == ""


TRAILING_COMMA = b'{"shouldBid": false, "reason": "The job did not pass this specific validation: ...",}'

REPLIES = [
    ("bid", 200, b'{"shouldBid": true, "reason": "looks good"}', ProbeVerdict(bid=True, reason="looks good")),
    ("no bid", 200, b'{"shouldBid": false, "reason": "too big"}', ProbeVerdict(bid=False, reason="too big")),
    ("reference trailing comma", 200, TRAILING_COMMA, ProbeVerdict(bid=False, reason="The job did not pass this specific validation: ...")),
    ("trailing comma in a list", 200, b'{"shouldBid": true, "reason": "ok", "extra": [1, 2, ],\n}', ProbeVerdict(bid=True, reason="ok")),
    ("commas inside strings untouched", 200, b'{"shouldBid": false, "reason": "a,} b, ] \\",}",}', ProbeVerdict(bid=False, reason='a,} b, ] ",}')),
    ("wait", 200, b'{"shouldBid": false, "shouldWait": true, "reason": "asking a human"}', ProbeVerdict(bid=False, wait=True, reason="asking a human")),
    ("wait without shouldBid", 202, b'{"shouldWait": true, "reason": "later"}', ProbeVerdict(bid=False, wait=True, reason="later")),
    ("not json, 200", 200, b"OK", ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("empty body, 204", 204, b"", ProbeVerdict(bid=True, reason="the http probe answered 204 without a decision")),
    ("not utf-8", 200, b"\xff\xfe", ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("shouldBid missing", 200, b'{"reason": "hm"}', ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("shouldBid not a bool", 200, b'{"shouldBid": "no", "reason": "hm"}', ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("reason missing", 200, b'{"shouldBid": false}', ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("json array", 200, b"[false]", ProbeVerdict(bid=True, reason="the http probe answered 200 without a decision")),
    ("not json, 500", 500, b"Internal Server Error\nstack", ProbeVerdict(bid=False, reason="the http probe answered 500: Internal Server Error")),
    ("404", 404, b"", ProbeVerdict(bid=False, reason="the http probe answered 404")),
    ("error status beats a yes", 403, b'{"shouldBid": true, "reason": "forbidden anyway"}', ProbeVerdict(bid=False, reason="the http probe answered 403: forbidden anyway")),
]


@pytest.mark.parametrize(("why", "status", "body", "verdict"), REPLIES, ids=[row[0] for row in REPLIES])
def test_http_probe_replies(why: str, status: int, body: bytes, verdict: ProbeVerdict) -> None:
    assert parse_http_probe_reply(status, body) == verdict, why


def test_exec_probe_verdicts() -> None:
    assert exec_probe_verdict(0, "whatever") == ProbeVerdict(bid=True, reason="the exec probe exited 0")
    declined = exec_probe_verdict(3, "\n  not tonight  \nsecond line\n")
    assert declined == ProbeVerdict(bid=False, reason="the exec probe exited with status 3: not tonight")
    assert exec_probe_verdict(1, "").reason == "the exec probe exited with status 1 (no output)"


@pytest.mark.parametrize(
    ("timeouts", "job_type", "declined"),
    [
        ({"TotalTimeout": 3600}, "batch", False),
        ({"TotalTimeout": 3601}, "batch", True),
        ({}, "batch", True),  # no TotalTimeout is no bound at all
        ({}, "ops", True),
        ({}, "service", False),  # services and daemons run on: no TotalTimeout to cap
    ],
)
def test_a_node_caps_how_long_a_batch_or_ops_run_may_ask_for(timeouts: dict, job_type: str, declined: bool) -> None:
    spec = job({"Timeouts": timeouts}, Type=job_type)
    decision = decide(SelectionPolicy(max_total_timeout=3600), NODE, "j1", spec)
    if declined:
        assert isinstance(decision, Decline)
        assert "at most 3600 s" in decision.reason and "--job-selection-max-total-timeout" in decision.reason
    else:
        assert decision == ACCEPT or not isinstance(decision, Decline)


def test_without_a_cap_any_length_is_taken() -> None:
    assert not isinstance(decide(SelectionPolicy(), NODE, "j1", job()), Decline)


def test_node_defaults_fill_only_what_a_job_leaves_out() -> None:
    defaults = JobDefaults(cpu=100, memory=GiB, total_timeout=60)
    bare = job({"Resources": {}}).with_node_defaults(defaults)
    assert (bare.task.resources.cpu, bare.task.resources.memory, bare.task.timeouts.total_timeout) == (100, GiB, 60)
    asked = job({"Timeouts": {"TotalTimeout": 5}})
    filled = asked.with_node_defaults(defaults)
    assert (filled.task.resources.cpu, filled.task.resources.memory, filled.task.timeouts.total_timeout) == (500, GiB, 5)
    service = job({"Resources": {}}, Type="service").with_node_defaults(defaults)
    assert service.task.timeouts.total_timeout == 0
