"""The job specification: the four examples load, and every rule turns a
wrong document into a clear error at the right place."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import yaml

from protocols.jobspec import (
    Constraint,
    DockerParams,
    JobSpec,
    JobSpecError,
    JobType,
    ParsedJob,
    Resources,
    TemplateError,
    constraints_match,
    job_spec_from_data,
    parse_job,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "examples"
NEEDED = {  # the variables each example cannot do without
    "batch": {},
    "service": {},
    "ops": {"query": "status:500"},
    "daemon": {
        "query": "status:500",
        "OpenSearchEndpoint": "https://search.example.com",
        "AccessLogBucket": "logs",
        "AWSRegion": "us-west-2",
    },
}
OPTIONAL = {"start-time": "2026-01-01T00:00:00Z", "end-time": "2026-01-02T00:00:00Z"}
WASM = {"Type": "wasm", "Params": {"EntryModule": {"Source": {"Type": "inline", "Params": {"URL": "data:,x"}}}}}


def example(name: str, **variables: str) -> ParsedJob:
    return parse_job((EXAMPLES / f"{name}.yaml").read_text(), variables={**NEEDED[name], **variables})


def job(**changes: object) -> dict[str, object]:
    task: dict[str, object] = {"Engine": WASM}
    task.update(changes.pop("task", {}))  # type: ignore[arg-type]
    document: dict[str, object] = {"Type": "batch", "Tasks": [task]}
    document.update(changes)
    return document


def docker(**params: object) -> dict[str, object]:
    return {"Engine": {"Type": "docker", "Params": {"Image": "alpine", **params}}}


def source(kind: str, target: str = "/in", **params: object) -> dict[str, object]:
    return {"InputSources": [{"Target": target, "Source": {"Type": kind, "Params": params}}]}


# ---------------------------------------------------------------- the examples


@pytest.mark.parametrize("name", ["batch", "ops", "daemon", "service"])
def test_the_examples_load_and_round_trip(name: str) -> None:
    spec = example(name, **OPTIONAL).spec
    assert spec.type == JobType(name)
    document = spec.to_document()
    assert json.loads(json.dumps(document)) == document
    assert job_spec_from_data(document).spec == spec
    assert parse_job(yaml.safe_dump(document), render_templates=False).spec == spec
    assert parse_job(json.dumps(document), render_templates=False).spec == spec


@pytest.mark.parametrize("name", ["ops", "daemon"])
def test_each_needed_variable_is_named_when_missing(name: str) -> None:
    for missing in NEEDED[name]:
        variables = {key: value for key, value in NEEDED[name].items() if key != missing}
        with pytest.raises(TemplateError, match=f'template variable "{missing}" is not set; pass -V {missing}=VALUE'):
            parse_job((EXAMPLES / f"{name}.yaml").read_text(), variables=variables)


def test_what_the_examples_say_is_read_exactly() -> None:
    batch = example("batch").spec
    assert (batch.name, batch.namespace, batch.priority, batch.count) == ("Batch Job Example", "default", 100, 2)
    assert batch.meta == {"Job purpose": "Provide detailed example of the batch job", "Meta purpose": "Describe the job"}
    assert batch.labels["Some option"] == "Some text"
    assert constraints_match(batch.constraints, {"Operating-System": "linux"})
    task = batch.task
    assert task.name == "Important Calculations"
    assert (task.resources.cpu, task.resources.memory, task.resources.disk, task.resources.gpu) == (250, 1 << 30, 100 << 20, 0)
    params = task.engine.params
    assert isinstance(params, DockerParams)
    assert (params.image, params.entrypoint, params.working_directory) == ("alek5eyk/batchjobexample:1.1", None, "")
    assert params.parameters == ("python", "supercalc.py", "5", "/outputs/result.txt")
    assert params.environment_variables == {"DEFAULT_USER_NAME": "root", "API_KEY": "none"}
    assert task.meta == {"Task goal": "show how to create declarative descriptions"}
    assert task.publisher.type == "ipfs"
    assert (task.input_sources[0].target, task.input_sources[0].source.type) == ("/data", "ipfs")
    assert task.input_sources[0].source.params["CID"] == "QmSYE8dVx6RTdDFFhBu51JjFG1fwwPdUJoXZ4ZNXvfoK2V"
    assert [(r.name, r.path) for r in task.result_paths] == [("outputs", "/outputs")]
    assert (task.network.type, task.network.domains) == ("HTTP", ("example.com", "ghcr.io"))
    assert (task.timeouts.queue_timeout, task.timeouts.total_timeout) == (101, 301)

    service = example("service").spec
    assert service.count == 1  # no Count: one replica
    assert service.task.resources.memory == 4 << 30
    assert len(service.constraints) == 2

    daemon = example("daemon", **OPTIONAL).spec
    assert daemon.count == 0
    env = daemon.task.engine.params.environment_variables
    assert env["OPENSEARCH_ENDPOINT"] == "https://search.example.com" and env["S3_TIME_FILE"] == "60"
    assert daemon.task.input_sources[0].source.params == {"SourcePath": "/data/log-orchestration/logs", "ReadWrite": False}
    assert daemon.task.input_sources[1].source.params["ReadWrite"] is True
    assert daemon.task.engine.params.parameters[3] == "2026-01-01T00:00:00Z"  # a date stays text


def test_an_unset_optional_template_value_is_empty() -> None:
    ops = example("ops").spec
    assert ops.task.engine.params.parameters == ("--query", "status:500", "--start-time", "", "--end-time", "")


def test_daemon_and_service_result_paths_and_queue_timeouts_are_warnings() -> None:
    assert example("batch").warnings == ()
    assert example("ops").warnings == ("Tasks[0].Timeouts.QueueTimeout: only batch jobs queue; ignored for ops jobs",)
    for name in ("daemon", "service"):
        warnings = example(name).warnings
        assert f"Tasks[0].ResultPaths: {name} jobs run continuously and publish no results" in warnings
        assert any("QueueTimeout" in warning for warning in warnings)


# ---------------------------------------------------------------- wrong documents

WRONG = [
    # the job
    (job(Type="cron"), "Type", "unknown job type 'cron'"),
    ({"Tasks": [{"Engine": WASM}]}, "Type", "is required"),
    ({"Type": "batch"}, "Tasks", "is required"),
    (job(Tasks=[]), "Tasks", "exactly one task per job is supported; found 0"),
    (job(Tasks=[{"Engine": WASM}, {"Engine": WASM}]), "Tasks", "exactly one task per job is supported; found 2"),
    (job(Count=0), "Count", "must be at least 1 for a batch job"),
    (job(Type="service", Count=-1), "Count", "must be at least 1 for a service job"),
    (job(Count="many"), "Count", "whole number"),
    (job(Type="ops", Count=3), "Count", "ops jobs run on every matching node and take no Count"),
    (job(Type="daemon", Count=2), "Count", "daemon jobs run on every matching node and take no Count"),
    (job(Priority="high"), "Priority", "whole number"),
    (job(Meta=["a"]), "Meta", "mapping"),
    (job(Labels={"a": ["b"]}), "Labels.a", "valid string"),
    ([1, 2], "document", "mapping of fields"),
    # unknown keys, with "did you mean"
    (job(Constraint=[]), "Constraint", "did you mean Constraints?"),
    (job(name="x"), "name", "did you mean Name?"),
    (job(Nmae="x"), "Nmae", "did you mean Name?"),
    (job(Colour="red"), "Colour", "known keys here"),
    (job(task={"Resourcez": {}}), "Tasks[0].Resourcez", "did you mean Resources?"),
    (job(task={"Resources": {"Cpu": 1}}), "Tasks[0].Resources.Cpu", "did you mean CPU?"),
    (job(task=docker(Imagee="x")), "Tasks[0].Engine.Params.Imagee", "did you mean Image?"),
    (job(task=docker(EntryModule="x")), "Tasks[0].Engine.Params.EntryModule", "known keys here"),  # a wasm key
    (job(task=source("ipfs", Cid="Qm")), "Tasks[0].InputSources[0].Source.Params", "did you mean CID?"),
    # constraints
    (job(Constraints=[{"Key": "a", "Operator": "~", "Values": ["b"]}]), "Constraints[0].Operator", "unknown operator '~'"),
    (job(Constraints=[{"Key": "a", "Operator": "=", "Values": []}]), "Constraints[0]", "exactly one value, got 0"),
    (job(Constraints=[{"Key": "a", "Operator": "==", "Values": ["b", "c"]}]), "Constraints[0]", "exactly one value, got 2"),
    (job(Constraints=[{"Key": "a", "Operator": "!=", "Values": ["b", "c"]}]), "Constraints[0]", "exactly one value"),
    (job(Constraints=[{"Key": "a", "Operator": "in"}]), "Constraints[0]", "at least one value, got 0"),
    (job(Constraints=[{"Key": "a", "Operator": "notin", "Values": []}]), "Constraints[0]", "at least one value"),
    (job(Constraints=[{"Key": "a", "Operator": "exists", "Values": ["b"]}]), "Constraints[0]", "no values, got 1"),
    (job(Constraints=[{"Key": "a", "Operator": "!", "Values": ["b"]}]), "Constraints[0]", "no values"),
    (job(Constraints=[{"Key": "a", "Operator": "gt", "Values": ["big"]}]), "Constraints[0]", "compares numbers"),
    (job(Constraints=[{"Key": "a", "Operator": "lt", "Values": ["1", "2"]}]), "Constraints[0]", "exactly one value"),
    (job(Constraints=[{"Operator": "exists"}]), "Constraints[0].Key", "is required"),
    (job(Constraints=[{"Key": "", "Operator": "exists"}]), "Constraints[0].Key", "at least 1 character"),
    # resources
    (job(task={"Resources": {"CPU": "lots"}}), "Tasks[0].Resources.CPU", "not a number of cores"),
    (job(task={"Resources": {"CPU": "0.0001"}}), "Tasks[0].Resources.CPU", "finer than a millicore"),
    (job(task={"Resources": {"CPU": -1}}), "Tasks[0].Resources.CPU", "cannot be negative"),
    (job(task={"Resources": {"Memory": "1Pb"}}), "Tasks[0].Resources.Memory", "not an amount of bytes"),
    (job(task={"Resources": {"Disk": "-5Gb"}}), "Tasks[0].Resources.Disk", "cannot be negative"),
    (job(task={"Resources": {"GPU": "1.5"}}), "Tasks[0].Resources.GPU", "not a whole number"),
    (job(task={"Resources": {"GPU": -1}}), "Tasks[0].Resources.GPU", "cannot be negative"),
    # engine
    (job(task={"Engine": {"Type": "rkt"}}), "Tasks[0].Engine.Type", "unknown engine type 'rkt' (use docker or wasm)"),
    (job(task={"Engine": {"Params": {}}}), "Tasks[0].Engine.Type", "is required"),
    (job(task={"Engine": {"Type": "docker", "Params": {}}}), "Tasks[0].Engine.Params.Image", "is required"),
    (job(task={"Engine": {"Type": "docker"}}), "Tasks[0].Engine.Params", "is required"),
    (job(task=docker(Entrypoint="sh")), "Tasks[0].Engine.Params.Entrypoint", "write a list"),
    (job(task=docker(EnvironmentVariables=["NOPE"])), "Tasks[0].Engine.Params.EnvironmentVariables", "not KEY=VALUE"),
    (job(task=docker(EnvironmentVariables=[" = v"])), "Tasks[0].Engine.Params.EnvironmentVariables", "no name before '='"),
    (job(task=docker(EnvironmentVariables="A=1")), "Tasks[0].Engine.Params.EnvironmentVariables", "not a list"),
    (job(task={"Engine": {"Type": "wasm", "Params": {}}}), "Tasks[0].Engine.Params.EntryModule", "is required"),
    (job(task={"Engine": {"Type": "wasm", "Params": {"EntryModule": {"Source": {"Type": "ftp"}}}}}),
     "Tasks[0].Engine.Params.EntryModule.Source.Type", "unknown source type 'ftp'"),
    (job(task={"Engine": {"Type": "wasm", "Params": {**WASM["Params"], "ImportModules": [{"Target": "/m"}]}}}),
     "Tasks[0].Engine.Params.ImportModules[0].Source", "is required"),
    # publisher
    (job(task={"Publisher": {"Type": "ftp"}}), "Tasks[0].Publisher.Type", "unknown publisher 'ftp'"),
    (job(task={"Publisher": {"Type": "s3", "Params": {"Bucket": "b"}}}), "Tasks[0].Publisher.Params", "needs Key"),
    (job(task={"Publisher": {"Type": "s3"}}), "Tasks[0].Publisher.Params", "needs Bucket and Key"),
    (job(task={"Publisher": {"Type": "ipfs", "Params": {"Blob": b"\x00"}}}), "Tasks[0].Publisher.Params", "holds a bytes"),
    # input sources
    (job(task=source("ipfs")), "Tasks[0].InputSources[0].Source.Params", "a ipfs source needs CID"),
    (job(task=source("ipfs", CID=5)), "Tasks[0].InputSources[0].Source.Params", "needs CID (text)"),
    (job(task=source("localDirectory")), "Tasks[0].InputSources[0].Source.Params", "needs SourcePath"),
    (job(task=source("localDirectory", SourcePath="/d", ReadWrite="yes")),
     "Tasks[0].InputSources[0].Source.Params", "ReadWrite must be true or false"),
    (job(task=source("s3", Bucket="b")), "Tasks[0].InputSources[0].Source.Params", "needs Key"),
    (job(task=source("url")), "Tasks[0].InputSources[0].Source.Params", "needs URL"),
    (job(task=source("inline", URL="http://x")), "Tasks[0].InputSources[0].Source.Params", "must be a data: URL"),
    (job(task=source("nfs")), "Tasks[0].InputSources[0].Source.Type", "unknown source type 'nfs'"),
    (job(task=source("url", target="in", URL="http://x")), "Tasks[0].InputSources[0].Target", "not an absolute path"),
    (job(task={"InputSources": [{"Source": {"Type": "url", "Params": {"URL": "http://x"}}}]}),
     "Tasks[0].InputSources[0].Target", "is required"),
    (job(task={"InputSources": [{"Target": "/in"}]}), "Tasks[0].InputSources[0].Source", "is required"),
    # result paths
    (job(task={"ResultPaths": [{"Name": "out", "Path": "out"}]}), "Tasks[0].ResultPaths[0].Path", "not an absolute path"),
    (job(task={"ResultPaths": [{"Path": "/out"}]}), "Tasks[0].ResultPaths[0].Name", "is required"),
    # names that would leave the job's folder (issue 12)
    (job(task={"ResultPaths": [{"Name": "/", "Path": "/host"}]}), "Tasks[0].ResultPaths[0].Name", "is absolute"),
    (job(task={"ResultPaths": [{"Name": "../../x", "Path": "/o"}]}), "Tasks[0].ResultPaths[0].Name", "'..' part"),
    (job(task={"ResultPaths": [{"Name": "a\x00b", "Path": "/o"}]}), "Tasks[0].ResultPaths[0].Name", "control character"),
    (job(task={"ResultPaths": [{"Name": "C:stuff", "Path": "/o"}]}), "Tasks[0].ResultPaths[0].Name", "is absolute"),
    (job(task={"ResultPaths": [{"Name": "a\\..", "Path": "/o"}]}), "Tasks[0].ResultPaths[0].Name", "backslash"),
    (job(task={"ResultPaths": [{"Name": "o", "Path": "/"}]}), "Tasks[0].ResultPaths[0].Path", "the task's root"),
    (job(task={"ResultPaths": [{"Name": "o", "Path": "/a/../../b"}]}), "Tasks[0].ResultPaths[0].Path", "'..' part"),
    (job(task={"ResultPaths": [{"Name": "o", "Path": "/a"}, {"Name": "o", "Path": "/b"}]}),
     "Tasks[0].ResultPaths", "each needs a Name of its own"),
    (job(task=source("url", target="/in/../../etc/x", URL="http://x")), "Tasks[0].InputSources[0].Target", "'..' part"),
    (job(task=source("url", target="/", URL="http://x")), "Tasks[0].InputSources[0].Target", "the task's root"),
    # network
    (job(task={"Network": {"Type": "Some"}}), "Tasks[0].Network.Type", "use None, Full or HTTP"),
    (job(task={"Network": {"Type": "Full", "Domains": ["a.com"]}}), "Tasks[0].Network", "Domains only apply to Type HTTP"),
    (job(task={"Network": {"Domains": ["a.com"]}}), "Tasks[0].Network", "(this is None)"),
    # timeouts
    (job(task={"Timeouts": {"TotalTimeout": -1}}), "Tasks[0].Timeouts.TotalTimeout", "must be at least 0"),
    (job(task={"Timeouts": {"QueueTimeout": "soon"}}), "Tasks[0].Timeouts.QueueTimeout", "whole number"),
    (job(task={"Timeouts": {"QueueTimeout": 1.5}}), "Tasks[0].Timeouts.QueueTimeout", "whole number"),
]


@pytest.mark.parametrize(("document", "path", "message"), WRONG, ids=[f"{w[1]}:{w[2]}" for w in WRONG])
def test_a_wrong_document_says_where_and_what(document: object, path: str, message: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        job_spec_from_data(document)
    found = [error for error in caught.value.errors if error.path == path]
    assert found, f"no error at {path}: {caught.value}"
    assert any(message in str(error) for error in found), str(caught.value)


def test_several_errors_are_reported_together() -> None:
    document = job(Type="ops", Count=3, Constraint=[], Priority="high",
                   task={"Resources": {"CPU": "x", "Memory": "y"}, "Network": {"Type": "?"}})
    with pytest.raises(JobSpecError) as caught:
        job_spec_from_data(document)
    paths = {error.path for error in caught.value.errors}
    expected = {"Count", "Constraint", "Priority", "Tasks[0].Resources.CPU", "Tasks[0].Resources.Memory", "Tasks[0].Network.Type"}
    assert expected <= paths
    assert len(str(caught.value).splitlines()) == len(caught.value.errors)


def test_every_error_says_how_to_fix_it() -> None:
    for document, _, _ in WRONG:
        with pytest.raises(JobSpecError) as caught:
            job_spec_from_data(document)
        for error in caught.value.errors:
            assert error.message and error.hint, f"no message or hint in {error}"


# ---------------------------------------------------------------- normalisation


def test_generated_fields_are_dropped_with_a_warning() -> None:
    parsed = job_spec_from_data(job(ID="j-1", State={"StateType": "Running"}, Version=2, Revision=3,
                                    CreateTime=1, ModifyTime=2))
    assert parsed.warnings[0] == "ID is generated by the network; it was ignored"
    assert len(parsed.warnings) == 6
    assert parsed.spec == job_spec_from_data(job()).spec


def test_defaults() -> None:
    spec = job_spec_from_data(job()).spec
    assert (spec.name, spec.namespace, spec.priority, spec.count) == ("", "default", 0, 1)
    assert (spec.meta, spec.labels, spec.constraints) == ({}, {}, ())
    task = spec.task
    assert (task.name, task.publisher.type, task.input_sources, task.result_paths) == ("main", "", (), ())
    assert (task.resources.cpu, task.resources.memory, task.resources.disk, task.resources.gpu) == (0, 0, 0, 0)
    assert (task.network.type, task.network.domains) == ("None", ())
    assert (task.timeouts.queue_timeout, task.timeouts.total_timeout) == (0, 0)
    assert task.engine.params.entrypoint == "_start"
    assert job_spec_from_data(job(Type="service")).spec.count == 1


@pytest.mark.parametrize("kind", ["ops", "daemon"])
@pytest.mark.parametrize("count", [None, 0, 1])
def test_ops_and_daemon_jobs_take_no_count(kind: str, count: int | None) -> None:
    spec = job_spec_from_data(job(Type=kind, **({} if count is None else {"Count": count}))).spec
    assert spec.count == 0
    assert "Count" not in spec.to_document()


def test_names_are_normalised() -> None:
    spec = job_spec_from_data(job(Type=" Batch ", task={
        "Engine": {"Type": "WASM", "Params": WASM["Params"]},
        "Network": {"Type": "http", "Domains": ["a.com"]},
        "Publisher": {"Type": "IPFS"},
        **source("LocalDirectory", SourcePath="/d"),
    }, Constraints=[{"Key": "k", "Operator": "NotIn", "Values": ["a"]}])).spec
    assert spec.type == "batch" and spec.task.engine.type == "wasm" and spec.task.network.type == "HTTP"
    assert spec.task.publisher.type == "ipfs" and spec.task.input_sources[0].source.type == "localDirectory"
    assert spec.constraints[0].operator == "notin"
    for none in (None, "", "none", "None"):
        assert job_spec_from_data(job(task={"Publisher": {"Type": none}})).spec.task.publisher.type == ""
    assert job_spec_from_data(job(task={"Publisher": None})).spec.task.publisher.type == ""
    for network in ("none", "FULL", "Http"):
        assert job_spec_from_data(job(task={"Network": {"Type": network}})).spec.task.network.type.lower() == network.lower()


def test_environment_variables_keep_order_and_write_back_as_a_list() -> None:
    entries = ["B = 2", "A=1", "C= x=y ", "EMPTY="]
    spec = job_spec_from_data(job(task=docker(EnvironmentVariables=entries))).spec
    env = spec.task.engine.params.environment_variables
    assert list(env.items()) == [("B", "2"), ("A", "1"), ("C", "x=y"), ("EMPTY", "")]
    assert spec.to_document()["Tasks"][0]["Engine"]["Params"]["EnvironmentVariables"] == ["B=2", "A=1", "C=x=y", "EMPTY="]


def test_yaml_reads_scalars_as_go_does() -> None:
    spec = parse_job(
        "Type: batch\nName: 2024\nLabels: {on: yes, n: 0755, t: '10:30'}\n"
        "Tasks:\n  - Engine:\n      Type: docker\n      Params:\n        Image: alpine\n"
        "        Parameters:\n          - 5\n          - true\n          -\n          - 10:30\n          - 2026-01-01\n"
        "        Entrypoint: [sh, -c]\n"
    ).spec
    assert spec.name == "2024" and spec.labels == {"on": "yes", "n": "755", "t": "10:30"}
    assert spec.task.engine.params.parameters == ("5", "true", "", "10:30", "2026-01-01")
    assert spec.task.engine.params.entrypoint == ("sh", "-c")


def test_to_document_is_the_written_form() -> None:
    document = example("batch").spec.to_document()
    resources = document["Tasks"][0]["Resources"]
    assert resources == {"CPU": "250m", "Memory": 1 << 30, "Disk": 100 << 20, "GPU": 0}
    assert document["Tasks"][0]["Network"] == {"Type": "HTTP", "Domains": ["example.com", "ghcr.io"]}
    assert document["Constraints"] == [{"Key": "Operating-System", "Operator": "=", "Values": ["linux"]}]
    assert list(document)[:5] == ["Name", "Namespace", "Type", "Priority", "Count"]


def test_yaml_and_json_both_work_and_bad_input_says_where() -> None:
    assert parse_job(json.dumps(job())).spec == parse_job(yaml.safe_dump(job())).spec
    with pytest.raises(JobSpecError) as caught:
        parse_job("Type: batch\nTasks: [\n")
    assert "not valid YAML or JSON" in str(caught.value) and caught.value.errors[0].path.startswith("line ")
    for text, message in [("", "mapping of fields"), ("- a\n- b\n", "mapping of fields"), ("[" * 5000, "nested too deeply"),
                          ("a: !!int x", "not an integer"), ("a: !!float x", "not valid YAML"),
                          ("a: !!python/object:os.system x", "not valid YAML")]:
        with pytest.raises(JobSpecError, match=message):
            parse_job(text)


def test_templates_can_be_turned_off() -> None:
    text = "Type: batch\nName: '{{.x}}'\nTasks: [{Engine: {Type: docker, Params: {Image: alpine}}}]\n"
    assert parse_job(text, render_templates=False).spec.name == "{{.x}}"
    assert parse_job(text, variables={"x": "y"}).spec.name == "y"
    with pytest.raises(TemplateError):
        parse_job(text)


# ---------------------------------------------------------------- the model as other code uses it


def test_specs_are_frozen_hashable_and_equal_by_value() -> None:
    first, second = example("batch").spec, example("batch").spec
    assert first == second and hash(first) == hash(second)
    assert len({first, second, example("service").spec}) == 2
    with pytest.raises(pydantic.ValidationError):
        first.priority = 1  # type: ignore[misc]
    assert first.task is first.tasks[0]


def test_with_defaults_names_a_job_by_its_id() -> None:
    unnamed = job_spec_from_data(job()).spec
    named = unnamed.with_defaults("j-123")
    assert named.name == "j-123" and unnamed.name == ""
    assert named.model_dump(exclude={"name"}) == unnamed.model_dump(exclude={"name"})
    assert hash(named) != hash(unnamed)
    batch = example("batch").spec
    assert batch.with_defaults("j-1") is batch


def test_python_code_builds_models_by_attribute_name_but_documents_use_pascal_case() -> None:
    assert Resources(cpu=250, memory=1 << 30).cpu == 250  # millicores by attribute
    assert Resources.model_validate({"CPU": 1}).cpu == 1000  # cores in a document
    assert Constraint(key="region", operator="in", values=("a", "b")).matches({"region": "b"})
    with pytest.raises(JobSpecError, match="did you mean Tasks"):
        job_spec_from_data({"Type": "batch", "tasks": [{"Engine": WASM}]})
    with pytest.raises(JobSpecError, match="did you mean Image"):
        job_spec_from_data(job(task={"Engine": {"Type": "docker", "Params": {"image": "alpine"}}}))
    assert JobSpec.model_validate(example("batch").spec.to_document()) == example("batch").spec


# ---------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("operator", "values", "labels", "holds"),
    [
        ("=", ["linux"], {"os": "linux"}, True),
        ("=", ["linux"], {}, False),
        ("==", ["linux"], {"os": "darwin"}, False),
        ("==", ["linux"], {"os": "linux"}, True),
        ("!=", ["linux"], {"os": "darwin"}, True),
        ("!=", ["linux"], {"os": "linux"}, False),
        ("!=", ["linux"], {}, True),
        ("in", ["a", "b"], {"os": "b"}, True),
        ("in", ["a", "b"], {"os": "c"}, False),
        ("in", ["a"], {}, False),
        ("notin", ["a", "b"], {"os": "b"}, False),
        ("notin", ["a", "b"], {"os": "c"}, True),
        ("notin", ["a"], {}, True),
        ("exists", [], {"os": ""}, True),
        ("exists", [], {}, False),
        ("!", [], {}, True),
        ("!", [], {"os": "x"}, False),
        ("gt", ["4"], {"os": "8"}, True),
        ("gt", ["4"], {"os": "4"}, False),
        ("gt", ["4"], {"os": "2"}, False),
        ("gt", ["1.5"], {"os": "1.75"}, True),
        ("lt", ["4"], {"os": "2.5"}, True),
        ("lt", ["4"], {"os": "-1"}, True),
        ("lt", ["4"], {"os": "many"}, False),
        ("lt", ["4"], {"os": "nan"}, False),
        ("gt", ["4"], {}, False),
    ],
)
def test_constraint_matching(operator: str, values: list[str], labels: dict[str, str], holds: bool) -> None:
    spec = job_spec_from_data(job(Constraints=[{"Key": "os", "Operator": operator, "Values": values}])).spec
    assert spec.constraints[0].matches(labels) is holds
    assert constraints_match(spec.constraints, labels) is holds


def test_all_constraints_must_hold() -> None:
    spec = example("service").spec
    assert constraints_match(spec.constraints, {"Architecture": "arm64", "region": "us-west-2", "x": "y"})
    assert not constraints_match(spec.constraints, {"Architecture": "arm64", "region": "eu-west-1"})
    assert not constraints_match(spec.constraints, {"region": "us-west-2"})
    assert constraints_match((), {})
