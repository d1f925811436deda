"""The job specification: the four examples load, and every rule turns a
wrong document into a clear error at the right place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from p2pnode.cli import main
from protocols.jobspec import JobSpecError, JobType, constraints_match, job_spec_from_data, parse_job
from protocols.templating import render
from protocols.units import parse_bytes, parse_cpu, parse_gpu

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples"
VARIABLES = {
    "query": "status:500",
    "start-time": "2026-01-01T00:00:00Z",
    "end-time": "2026-01-02T00:00:00Z",
    "OpenSearchEndpoint": "https://search.example.com",
    "AccessLogBucket": "logs",
    "AWSRegion": "us-west-2",
}
WASM = {"Type": "wasm", "Params": {"EntryModule": {"Source": {"Type": "inline", "Params": {"URL": "data:,x"}}}}}


def job(**changes: object) -> dict[str, object]:
    task = {"Engine": WASM}
    task.update(changes.pop("task", {}))  # type: ignore[arg-type]
    document: dict[str, object] = {"Type": "batch", "Tasks": [task]}
    document.update(changes)
    return document


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", ["batch", "ops", "daemon", "service"])
def test_the_examples_load_and_round_trip(name: str) -> None:
    parsed = parse_job((EXAMPLES / f"{name}.yaml").read_text(), variables=VARIABLES)
    spec = parsed.spec
    assert spec.type == JobType(name)
    assert job_spec_from_data(spec.to_document()).spec == spec
    assert json.loads(json.dumps(spec.to_document())) == spec.to_document()


def test_what_the_examples_say_is_read_exactly() -> None:
    batch = parse_job((EXAMPLES / "batch.yaml").read_text()).spec
    assert (batch.name, batch.namespace, batch.priority, batch.count) == ("Batch Job Example", "default", 100, 2)
    task = batch.task
    assert task.name == "Important Calculations"
    assert (task.resources.cpu, task.resources.memory, task.resources.disk, task.resources.gpu) == (250, 1 << 30, 100 << 20, 0)
    assert task.engine.params.environment_variables == {"DEFAULT_USER_NAME": "root", "API_KEY": "none"}
    assert task.engine.params.entrypoint is None
    assert (task.network.type, task.network.domains) == ("HTTP", ("example.com", "ghcr.io"))
    assert (task.timeouts.queue_timeout, task.timeouts.total_timeout) == (101, 301)
    assert task.input_sources[0].source.params["CID"].startswith("Qm")
    service = parse_job((EXAMPLES / "service.yaml").read_text()).spec
    assert service.count == 1  # no Count: one replica
    daemon = parse_job((EXAMPLES / "daemon.yaml").read_text(), variables=VARIABLES).spec
    assert daemon.task.engine.params.environment_variables["OPENSEARCH_ENDPOINT"] == "https://search.example.com"
    assert daemon.task.input_sources[1].source.params["ReadWrite"] is True


def test_an_unset_optional_template_value_is_empty() -> None:
    ops = parse_job((EXAMPLES / "ops.yaml").read_text(), variables={"query": "q"}).spec
    assert ops.task.engine.params.parameters == ("--query", "q", "--start-time", "", "--end-time", "")


# ---------------------------------------------------------------- wrong documents

WRONG = [
    (job(Type="cron"), "Type", "unknown job type"),
    ({"Tasks": [{"Engine": WASM}]}, "Type", "required"),
    (job(Tasks=[]), "Tasks", "exactly one task"),
    (job(Tasks=[{"Engine": WASM}, {"Engine": WASM}]), "Tasks", "exactly one task per job is supported; found 2"),
    (job(Count=0), "Count", "at least 1"),
    (job(Type="ops", Count=3), "Count", "take no Count"),
    (job(Constraint=[]), "Constraint", "did you mean Constraints"),
    (job(name="x"), "name", "did you mean Name"),
    (job(task={"Resourcez": {}}), "Tasks[0].Resourcez", "did you mean Resources"),
    (job(Constraints=[{"Key": "a", "Operator": "~", "Values": ["b"]}]), "Constraints[0].Operator", "unknown operator"),
    (job(Constraints=[{"Key": "a", "Operator": "=", "Values": []}]), "Constraints[0]", "exactly one value"),
    (job(Constraints=[{"Key": "a", "Operator": "in"}]), "Constraints[0]", "at least one value"),
    (job(Constraints=[{"Key": "a", "Operator": "exists", "Values": ["b"]}]), "Constraints[0]", "no values"),
    (job(Constraints=[{"Key": "a", "Operator": "gt", "Values": ["big"]}]), "Constraints[0]", "compares numbers"),
    (job(task={"Resources": {"CPU": "lots"}}), "Tasks[0].Resources.CPU", "not a number"),
    (job(task={"Resources": {"CPU": "0.0001"}}), "Tasks[0].Resources.CPU", "finer than a millicore"),
    (job(task={"Resources": {"Memory": "1Pb"}}), "Tasks[0].Resources.Memory", "not an amount of bytes"),
    (job(task={"Resources": {"Disk": "-5Gb"}}), "Tasks[0].Resources.Disk", "negative"),
    (job(task={"Resources": {"GPU": "1.5"}}), "Tasks[0].Resources.GPU", "whole number"),
    (job(task={"Network": {"Type": "Some"}}), "Tasks[0].Network.Type", "None, Full or HTTP"),
    (job(task={"Network": {"Type": "Full", "Domains": ["a.com"]}}), "Tasks[0].Network", "Domains only apply to Type HTTP"),
    (job(task={"Timeouts": {"TotalTimeout": -1}}), "Tasks[0].Timeouts.TotalTimeout", "at least 0"),
    (job(task={"Engine": {"Type": "rkt"}}), "Tasks[0].Engine", "docker or wasm"),
    (job(task={"Engine": {"Type": "docker", "Params": {}}}), "Tasks[0].Engine.Params.Image", "required"),
    (job(task={"Engine": {"Type": "docker", "Params": {"Image": "x", "EnvironmentVariables": ["NOPE"]}}}),
     "Tasks[0].Engine.Params.EnvironmentVariables", "not KEY=VALUE"),
    (job(task={"Engine": {"Type": "docker", "Params": {"Image": "x", "EnvironmentVariables": ["=v"]}}}),
     "Tasks[0].Engine.Params.EnvironmentVariables", "no name"),
    (job(task={"Publisher": {"Type": "ftp"}}), "Tasks[0].Publisher.Type", "unknown publisher"),
    (job(task={"Publisher": {"Type": "s3", "Params": {"Bucket": "b"}}}), "Tasks[0].Publisher", "Params.Key"),
    (job(task={"InputSources": [{"Target": "/in", "Source": {"Type": "ipfs", "Params": {}}}]}),
     "Tasks[0].InputSources[0].Source", "Params.CID"),
    (job(task={"InputSources": [{"Target": "in", "Source": {"Type": "url", "Params": {"URL": "http://x"}}}]}),
     "Tasks[0].InputSources[0].Target", "absolute path"),
    (job(task={"InputSources": [{"Source": {"Type": "url", "Params": {"URL": "http://x"}}}]}),
     "Tasks[0].InputSources", "needs a Target"),
    (job(task={"InputSources": [{"Target": "/i", "Source": {"Type": "inline", "Params": {"URL": "http://x"}}}]}),
     "Tasks[0].InputSources[0].Source", "data: URL"),
    (job(task={"InputSources": [{"Target": "/i", "Source": {"Type": "nfs"}}]}),
     "Tasks[0].InputSources[0].Source.Type", "unknown source type"),
    (job(task={"ResultPaths": [{"Name": "out", "Path": "out"}]}), "Tasks[0].ResultPaths[0].Path", "absolute path"),
    ([1, 2], "document", "mapping of fields"),
]


@pytest.mark.parametrize(("document", "path", "message"), WRONG, ids=[f"{w[1]}:{w[2]}" for w in WRONG])
def test_a_wrong_document_says_where_and_what(document: object, path: str, message: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        job_spec_from_data(document)
    found = [e for e in caught.value.errors if e.path == path]
    assert found, f"no error at {path}: {caught.value}"
    assert any(message in f"{e.message} ({e.hint})" for e in found), str(caught.value)


def test_several_errors_are_reported_together() -> None:
    document = job(Constraint=[], Priority="high", task={"Resources": {"CPU": "x", "Memory": "y"}})
    with pytest.raises(JobSpecError) as caught:
        job_spec_from_data(document)
    paths = {e.path for e in caught.value.errors}
    assert {"Constraint", "Priority", "Tasks[0].Resources.CPU", "Tasks[0].Resources.Memory"} <= paths


def test_generated_fields_are_dropped_with_a_warning() -> None:
    parsed = job_spec_from_data(job(ID="j-1", State={"StateType": "Running"}, Revision=3))
    assert any("ID is generated by the network" in w for w in parsed.warnings)
    assert len(parsed.warnings) == 3


def test_defaults_and_normalisation() -> None:
    spec = parse_job(yaml.safe_dump(job(task={"Engine": {"Type": "WASM", "Params": WASM["Params"]},
                                              "Network": {"Type": "http", "Domains": ["a.com"]}}))).spec
    assert (spec.namespace, spec.count, spec.name, spec.task.name) == ("default", 1, "", "main")
    assert spec.task.engine.type == "wasm" and spec.task.network.type == "HTTP"
    assert spec.task.engine.params.entrypoint == "_start"
    assert parse_job(yaml.safe_dump(job(Type="daemon"))).spec.count == 0


def test_yaml_and_json_both_work_and_bad_syntax_says_where() -> None:
    assert parse_job(json.dumps(job())).spec == parse_job(yaml.safe_dump(job())).spec
    with pytest.raises(JobSpecError) as caught:
        parse_job("Type: batch\nTasks: [\n")
    assert "not valid YAML" in str(caught.value) and "line" in caught.value.errors[0].path


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("{{.name}}", {"name": "x"}, "x"),
        ('{{index . "start-time"}}', {"start-time": "t"}, "t"),
        ('{{index . "missing"}}', {}, ""),
        ('{{or .a "b"}}', {}, "b"),
        ('{{or .a "b"}}', {"a": "A"}, "A"),
        ('{{or (index . "start-time") ""}}', {}, ""),
        ('{{or (index . "start-time") "now"}}', {"start-time": "t"}, "t"),
        ("{{`raw`}}", {}, "raw"),
        ('a {{- " b " -}} c', {}, "a b c"),
        ("{{/* a comment */}}x", {}, "x"),
        ("# {{...}} in a comment stays\n", {}, "# {{...}} in a comment stays\n"),
    ],
)
def test_template_constructs(template: str, variables: dict[str, str], expected: str) -> None:
    assert render(template, variables) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.query}}", 'template variable "query" is not set; pass -V query=VALUE'),
        ("{{.a | upper}}", "not supported"),
        ("{{printf \"%s\" .a}}", "not supported"),
        ("{{.}}", "whole variable map"),
        ("{{ (or .a }}", "never closed"),
        ("{{.a", "never closes"),
    ],
)
def test_template_errors_are_clear(template: str, message: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        render(template, {})
    assert message in str(caught.value)


# ---------------------------------------------------------------- units and constraints


@pytest.mark.parametrize(
    ("value", "millicores"), [("1", 1000), (1, 1000), ("0.25", 250), (0.5, 500), ("250m", 250), ("1.5", 1500), ("0", 0)]
)
def test_cpu(value: object, millicores: int) -> None:
    assert parse_cpu(value) == millicores


@pytest.mark.parametrize(
    ("value", "size"),
    [("1Gb", 1 << 30), ("100mb", 100 << 20), ("512MB", 512 << 20), ("2Tb", 2 << 40), ("1kb", 1024), ("1.5Gb", 3 << 29),
     ("4096", 4096), (4096, 4096), ("1Gi", 1 << 30), ("64M", 64 << 20)],
)
def test_bytes(value: object, size: int) -> None:
    assert parse_bytes(value) == size


@pytest.mark.parametrize(("value", "count"), [("0", 0), (2, 2), ("3", 3)])
def test_gpu(value: object, count: int) -> None:
    assert parse_gpu(value) == count


@pytest.mark.parametrize(
    ("operator", "values", "labels", "holds"),
    [
        ("=", ["linux"], {"os": "linux"}, True),
        ("==", ["linux"], {"os": "darwin"}, False),
        ("!=", ["linux"], {"os": "darwin"}, True),
        ("!=", ["linux"], {}, True),
        ("in", ["a", "b"], {"os": "b"}, True),
        ("notin", ["a", "b"], {"os": "b"}, False),
        ("notin", ["a"], {}, True),
        ("exists", [], {"os": ""}, True),
        ("exists", [], {}, False),
        ("!", [], {}, True),
        ("gt", ["4"], {"os": "8"}, True),
        ("gt", ["4"], {"os": "2"}, False),
        ("lt", ["4"], {"os": "2.5"}, True),
        ("lt", ["4"], {"os": "many"}, False),
        ("gt", ["4"], {}, False),
    ],
)
def test_constraint_matching(operator: str, values: list[str], labels: dict[str, str], holds: bool) -> None:
    spec = job_spec_from_data(job(Constraints=[{"Key": "os", "Operator": operator, "Values": values}])).spec
    assert constraints_match(spec.constraints, labels) is holds


# ---------------------------------------------------------------- the CLI


def test_validate_prints_the_normalised_job() -> None:
    result = CliRunner().invoke(main, ["job", "validate", str(EXAMPLES / "batch.yaml"), "-o", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["Tasks"][0]["Resources"]["CPU"] == "250m"


def test_validate_reads_stdin_and_fails_with_every_error() -> None:
    result = CliRunner().invoke(main, ["job", "validate", "-"], input="Type: batch\nConstraint: []\nTasks: []\n")
    assert result.exit_code == 1
    assert "Constraint: unknown key 'Constraint' (did you mean Constraints?)" in result.output


def test_template_variables_from_flags_and_environment() -> None:
    ops = str(EXAMPLES / "ops.yaml")
    runner = CliRunner()
    missing = runner.invoke(main, ["job", "validate", ops])
    assert missing.exit_code == 1 and 'template variable "query" is not set' in missing.output
    from_env = runner.invoke(main, ["job", "validate", ops, "-E", "JOB_.*|query", "-o", "json"], env={"query": "env"})
    assert from_env.exit_code == 0 and "env" in json.loads(from_env.stdout)["Tasks"][0]["Engine"]["Params"]["Parameters"]
    explicit = runner.invoke(main, ["job", "validate", ops, "-E", "query", "-V", "query=flag", "-o", "json"],
                             env={"query": "env"})
    assert "flag" in json.loads(explicit.stdout)["Tasks"][0]["Engine"]["Params"]["Parameters"]
    raw = runner.invoke(main, ["job", "validate", ops, "--no-template"])
    assert raw.exit_code == 1  # the raw {{...}} is not valid YAML
