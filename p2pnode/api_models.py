"""The API's request and response bodies as pydantic models, and the
OpenAPI document made from them.

Names follow the reference network's v1 API (its published swagger
document: `apimodels.ListNodesResponse` has `Nodes`, `GetNodeResponse` wraps
`Node`, `models.Resources` gives CPU in cores and Memory/Disk in bytes, a
job's `Task.Resources` keeps the strings the user wrote). Every model
allows fields beyond the ones named, as the reference's clients do.
The models describe; the views (`p2pnode.views`) build the bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from protocols.jobspec import JobSpec


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorResponse(_Open):
    error: str
    hint: str
    code: int


class IsAliveResponse(_Open):
    Status: str


class HealthzResponse(_Open):
    Status: str
    NodeID: str
    Liveness: dict[str, int]
    FreeSpace: dict[str, int]


class BuildVersionInfo(_Open):
    GitVersion: str
    Major: str = ""
    Minor: str = ""


class VersionResponse(_Open):
    BuildVersionInfo: BuildVersionInfo


class Resources(_Open):
    CPU: float  # cores
    Memory: int  # bytes
    Disk: int  # bytes
    GPU: int


class ComputeNodeInfo(_Open):
    ExecutionEngines: list[str]
    Publishers: list[str]
    StorageSources: list[str]
    MaxCapacity: Resources
    AvailableCapacity: Resources


class NodeInfo(_Open):
    NodeID: str
    NodeType: str
    Labels: dict[str, str]
    BacalhauVersion: BuildVersionInfo
    ComputeNodeInfo: ComputeNodeInfo


class NodeState(_Open):
    Info: NodeInfo
    Membership: str
    Connection: str


class ListNodesResponse(_Open):
    Nodes: list[NodeState]
    NextToken: str


class GetNodeResponse(_Open):
    Node: NodeState


class State(_Open):
    StateType: str
    Message: str = ""


class Job(_Open):
    ID: str
    Name: str
    Namespace: str
    Type: str
    Count: int
    Priority: int
    Meta: dict[str, str]
    Labels: dict[str, str]
    Tasks: list[dict[str, Any]]
    State: State
    Version: int
    Revision: int
    CreateTime: int
    ModifyTime: int


class RunCommandResult(_Open):
    Stdout: str
    stderr: str
    ExitCode: int
    ErrorMsg: str
    StdoutTruncated: bool
    StderrTruncated: bool


class SpecConfig(_Open):
    Type: str
    Params: dict[str, Any]


class Execution(_Open):
    ID: str
    JobID: str
    NodeID: str
    PartitionIndex: int
    ComputeState: State
    DesiredState: State
    Revision: int
    CreateTime: int
    ModifyTime: int
    RunOutput: RunCommandResult | None = None
    PublishedResult: SpecConfig | None = None


class Event(_Open):
    Topic: str
    Message: str


class StateChange(_Open):
    Previous: str
    New: str


class JobHistory(_Open):
    Type: str
    JobID: str
    ExecutionID: str
    Time: str
    Event: Event
    JobState: StateChange | None = None
    ExecutionState: StateChange | None = None


class ListJobsResponse(_Open):
    Items: list[Job]
    NextToken: str


class ListJobExecutionsResponse(_Open):
    Items: list[Execution]
    NextToken: str


class ListJobHistoryResponse(_Open):
    Items: list[JobHistory]
    NextToken: str


class GetJobResponse(_Open):
    Job: Job
    Executions: ListJobExecutionsResponse | None = None
    History: ListJobHistoryResponse | None = None


class PutJobRequest(_Open):
    Job: JobSpec  # the job file's document (`protocols.jobspec`); the server checks more than the schema says


class PutJobResponse(_Open):
    JobID: str
    EvaluationID: str
    Warnings: list[str]


class StopJobResponse(_Open):
    EvaluationID: str


class ListJobResultsResponse(_Open):
    Items: list[SpecConfig]
    NextToken: str


class ResultFile(_Open):
    Path: str
    Size: int
    SHA256: str


class ExecutionFiles(_Open):
    ExecutionID: str
    NodeID: str
    Error: str
    Files: list[ResultFile]


class ResultFilesResponse(_Open):
    Items: list[ExecutionFiles]


class LogLine(_Open):
    """One line of the plain logs stream (application/x-ndjson)."""

    ExecutionID: str
    NodeID: str
    Type: str  # stdout or stderr
    Line: str


class HeldBid(_Open):
    ExecutionID: str
    JobID: str
    JobName: str
    Reason: str
    Since: int
    State: str
    Outcome: str


class ListBidsResponse(_Open):
    Items: list[HeldBid]
    NextToken: str


class DecideBidRequest(_Open):
    Accept: bool
    Reason: str = ""


class DecideBidResponse(_Open):
    ExecutionID: str
    JobID: str
    Accepted: bool
    Reason: str


# ---------------------------------------------------------------- the OpenAPI document


@dataclass(frozen=True)
class Query:
    name: str
    type: str = "string"  # string, integer, boolean
    description: str = ""
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    """One route's method as OpenAPI tells it."""

    method: str
    path: str
    summary: str
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    description: str = ""
    tags: tuple[str, ...] = field(default=())


def openapi_document(operations: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.0 document: each operation with its path and query
    parameters, request body and responses, schemas under components."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = ref(ErrorResponse)
    paths: dict[str, Any] = {}
    for op in operations:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _path_names(op.path)
        ]
        for query in op.query:
            schema: dict[str, Any] = {"type": query.type}
            if query.enum:
                schema["enum"] = list(query.enum)
            if query.type == "integer":
                schema["minimum"] = 0
            parameters.append({"name": query.name, "in": "query", "required": False, "schema": schema,
                               "description": query.description})
        responses: dict[str, Any] = {}
        if op.response is not None:
            responses["200"] = {"description": "OK", "content": {op.media_type: {"schema": ref(op.response)}}}
        elif op.media_type != "application/json":
            responses["200"] = {"description": "OK", "content": {op.media_type: {"schema": {"type": "string", "format": "binary"}}}}
        for status in sorted({*op.errors, 500}):
            responses[str(status)] = {"description": _REASONS.get(status, "error"),
                                      "content": {"application/json": {"schema": error}}}
        operation: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op),
                                     "parameters": parameters, "responses": responses}
        if op.description:
            operation["description"] = op.description
        if op.tags:
            operation["tags"] = list(op.tags)
        if op.request is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(op.request)}}}
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {"openapi": "3.0.3", "info": {"title": title, "version": version}, "paths": paths,
            "components": {"schemas": schemas}}


_REASONS = {400: "Bad request", 404: "Not found", 409: "Conflict", 413: "Body too large", 401: "Unauthorized",
            502: "A peer failed", 503: "Still starting", 500: "Internal error"}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _operation_id(op: Operation) -> str:
    words = [part.strip("{}") for part in op.path.split("/")[3:] if part]
    return op.method.lower() + "_" + "_".join(words)
