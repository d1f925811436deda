"""The job specification: every field of a job file, read, checked, normalised.

Users write PascalCase keys in YAML or JSON (see `shared/spec/jobs.md`), matched
exactly; the models keep snake_case attributes with PascalCase aliases (Python
code may construct them by attribute name) and are frozen and hashable, so one
spec can be shared by many simulated nodes. Amounts become exact integers
(millicores, bytes; see `protocols.units`). Every problem in a document is
reported at once, each with its path, what is wrong and how to fix it
(`JobSpecError`).

Normalisation: Namespace defaults to `default`; Name stays "" until the network
gives the job an ID (`JobSpec.with_defaults`); batch and service jobs without a
Count run 1 replica; ops and daemon jobs run on every matching node and have
Count 0 (a Count of 0 or 1 is accepted and dropped, more is an error). The
fields the network sets (ID, State, Version, Revision, CreateTime, ModifyTime)
are not part of a spec: a document that carries them has them dropped, with a
warning.

Size: ≈900 lines, one model per part of the spec with its checks and messages;
it is long because the spec is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from protocols.errors import FieldError, JobSpecError, TemplateError
from protocols.paths import mount_point, relative_name
from protocols.templating import render
from protocols.units import format_cpu, parse_bytes, parse_cpu, parse_gpu

# A job's record carries its spec to every keeper in one message (see
# `protocols.wire.MAX_MESSAGE_BYTES`, 4 MiB) beside its executions and history;
# a quarter of it for the spec leaves the rest room to grow.
MAX_SPEC_BYTES = 1 << 20
RESULT_FILES = ("stdout", "stderr", "exitCode")  # beside the ResultPaths folders in every published result
GENERATED_FIELDS = ("ID", "State", "Version", "Revision", "CreateTime", "ModifyTime")
_ACRONYMS = {"cpu": "CPU", "gpu": "GPU", "cid": "CID", "url": "URL"}


def _alias(name: str) -> str:
    return "".join(_ACRONYMS.get(part, part.capitalize()) for part in name.split("_"))


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return frozenset((key, _hashable(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=_alias,
        validate_by_alias=True,
        validate_by_name=True,  # Python code may say Resources(cpu=250); documents are read by alias only
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def __hash__(self) -> int:
        return hash((type(self), tuple(_hashable(getattr(self, name)) for name in type(self).model_fields)))


def _text(value: Any) -> Any:
    """YAML reads `5` as a number and an empty `- ` as null; a job file's
    strings mean text either way (as Go reads them into a string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _text_list(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(_text(item) for item in value)
    return value


def _text_map(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {_text(key): _text(item) for key, item in value.items()}
    return value


def _empty_if_none(empty: Any) -> Callable[[type, Any], Any]:
    return lambda cls, value: empty if value is None else value


def _plain_params(value: Any, where: str) -> Any:
    """Params are free-form, but must be plain JSON: they travel and are stored."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return value  # pydantic says it must be a mapping
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{where} key {key!r} is not text; write keys as words, like CID or URL")
        _check_plain(item, f"{where}.{key}")
    return dict(value)


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, where)
        return
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        for item in value.values():
            _check_plain(item, where)
        return
    raise ValueError(f"{where} holds a {type(value).__name__}; use text, numbers, true/false, lists or mappings")


def _unknown_keys(params: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in params:
        if key not in allowed:
            close = _did_you_mean(key, set(allowed))
            fix = f"did you mean {close}?" if close else f"allowed: {', '.join(allowed)}"
            raise ValueError(f"{where} has an unknown key {key!r}; {fix}")


# ---------------------------------------------------------------- constraints


class Operator(StrEnum):
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_ARITY = {  # (fewest, most) values; None = no upper bound
    Operator.EQUALS: (1, 1),
    Operator.DOUBLE_EQUALS: (1, 1),
    Operator.NOT_EQUALS: (1, 1),
    Operator.IN: (1, None),
    Operator.NOT_IN: (1, None),
    Operator.EXISTS: (0, 0),
    Operator.DOES_NOT_EXIST: (0, 0),
    Operator.GREATER_THAN: (1, 1),
    Operator.LESS_THAN: (1, 1),
}


class Constraint(_Model):
    """A selector on node labels: `Key`, `Operator`, `Values`. The test is
    built once per constraint; matching does dictionary lookups only."""

    key: str = Field(min_length=1)
    operator: Operator
    values: tuple[str, ...] = ()

    _key = field_validator("key", mode="before")(lambda cls, value: _text(value))
    _values = field_validator("values", mode="before")(lambda cls, value: _text_list(value))

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {op.value for op in Operator}:
            return value.strip().lower()
        known = ", ".join(op.value for op in Operator)
        raise ValueError(f"unknown operator {value!r}; use one of {known}")

    @model_validator(mode="after")
    def _arity(self) -> Constraint:
        low, high = _ARITY[self.operator]
        count = len(self.values)
        if count < low or (high is not None and count > high):
            wanted = "no values" if high == 0 else ("exactly one value" if high == 1 else "at least one value")
            fix = "remove Values" if high == 0 else "list them under Values"
            raise ValueError(f"operator {self.operator.value!r} takes {wanted}, got {count}; {fix}")
        if self.operator in (Operator.GREATER_THAN, Operator.LESS_THAN) and _number(self.values[0]) is None:
            raise ValueError(
                f"operator {self.operator.value!r} compares numbers and {self.values[0]!r} is not one; write e.g. \"4\""
            )
        return self

    @cached_property
    def _test(self) -> Callable[[Mapping[str, str]], bool]:
        key, values, op = self.key, frozenset(self.values), self.operator
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
            return lambda labels: labels.get(key) in values
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return lambda labels: labels.get(key) not in values
        if op == Operator.EXISTS:
            return lambda labels: key in labels
        if op == Operator.DOES_NOT_EXIST:
            return lambda labels: key not in labels
        bound = _number(self.values[0])
        assert bound is not None  # checked by _arity
        if op == Operator.GREATER_THAN:
            return lambda labels: (n := _number(labels.get(key))) is not None and n > bound
        return lambda labels: (n := _number(labels.get(key))) is not None and n < bound

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels satisfies the constraint. A node
        lacking the key satisfies `!=`, `notin` and `!`, and fails `gt`/`lt`."""
        return self._test(labels)


def constraints_match(constraints: tuple[Constraint, ...] | list[Constraint], labels: Mapping[str, str]) -> bool:
    """Whether every constraint holds for a node with these labels."""
    for constraint in constraints:
        if not constraint._test(labels):
            return False
    return True


def _number(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number - number == 0 else None  # finite only


# ---------------------------------------------------------------- task parts


@dataclass(frozen=True)
class _Millicores:
    value: int


class Resources(_Model):
    """What a task needs: `cpu` in millicores, `memory` and `disk` in bytes, `gpu` a count.

    A document writes CPU in cores or millicores (`CPU: 1`, `250m`); Python code
    gives the attribute in millicores (`Resources(cpu=250)`)."""

    cpu: int = Field(default=0, ge=0)
    memory: int = Field(default=0, ge=0)
    disk: int = Field(default=0, ge=0)
    gpu: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _cpu_by_name_is_millicores(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and type(data.get("cpu")) is int:
            data = {**data, "cpu": _Millicores(data["cpu"])}
        return data

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        if isinstance(value, _Millicores):
            return value.value
        return 0 if value in (None, "") else parse_cpu(value)

    _memory = field_validator("memory", mode="before")(lambda cls, v: 0 if v in (None, "") else parse_bytes(v, "Memory"))
    _disk = field_validator("disk", mode="before")(lambda cls, v: 0 if v in (None, "") else parse_bytes(v, "Disk"))
    _gpu = field_validator("gpu", mode="before")(lambda cls, v: 0 if v in (None, "") else parse_gpu(v, "GPU"))

    @field_serializer("cpu")
    def _show_cpu(self, value: int) -> str:
        return format_cpu(value)


class NetworkType(StrEnum):
    NONE = "None"
    FULL = "Full"
    HTTP = "HTTP"


class Network(_Model):
    """`None` (default), `Full`, or `HTTP` limited to `domains`."""

    type: NetworkType = NetworkType.NONE
    domains: tuple[str, ...] = ()

    _domains = field_validator("domains", mode="before")(lambda cls, value: _text_list(value))

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value is None or value == "":
            return NetworkType.NONE
        for kind in NetworkType:
            if isinstance(value, str) and value.strip().lower() == kind.value.lower():
                return kind
        raise ValueError(f"unknown network type {value!r}; use None, Full or HTTP")

    @model_validator(mode="after")
    def _domains_only_with_http(self) -> Network:
        if self.domains and self.type != NetworkType.HTTP:
            raise ValueError(
                f"Domains only apply to Type HTTP (this is {self.type.value}); drop Domains or set Type: HTTP"
            )
        return self


class Timeouts(_Model):
    """Whole seconds; 0 means none. `queue_timeout` only matters for batch jobs."""

    queue_timeout: int = Field(default=0, ge=0)
    total_timeout: int = Field(default=0, ge=0)

    _none_is_zero = field_validator("queue_timeout", "total_timeout", mode="before")(_empty_if_none(0))


_SOURCE_TYPES = {"ipfs": "ipfs", "localdirectory": "localDirectory", "s3": "s3", "url": "url", "inline": "inline"}
_SOURCE_PARAMS = {  # required, then every allowed key
    "ipfs": (("CID",), ("CID",)),
    "localDirectory": (("SourcePath",), ("SourcePath", "ReadWrite")),
    "s3": (("Bucket", "Key"), ("Bucket", "Key", "Region", "Endpoint", "Filter", "VersionID", "ChecksumSHA256")),
    "url": (("URL",), ("URL", "ChecksumSHA256")),
    "inline": (("URL",), ("URL",)),
}


class SourceSpec(_Model):
    """Where an input comes from: `Type` and its `Params`."""

    type: str
    params: dict[str, Any] = {}

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _SOURCE_TYPES:
            return _SOURCE_TYPES[value.strip().lower()]
        raise ValueError(f"unknown source type {value!r}; use one of {', '.join(_SOURCE_TYPES.values())}")

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any, info: ValidationInfo) -> Any:
        params = _plain_params(value, "Params")
        kind = info.data.get("type")
        if kind is None or not isinstance(params, dict):
            return params
        required, allowed = _SOURCE_PARAMS[kind]
        _unknown_keys(params, allowed, f"a {kind} source's Params")
        missing = [name for name in required if not isinstance(params.get(name), str) or not params[name]]
        if missing:
            raise ValueError(f"a {kind} source needs {' and '.join(missing)} (text); add it under Params")
        if kind == "inline" and not params["URL"].startswith("data:"):
            raise ValueError("an inline source's URL must be a data: URL; write data:[type][;base64],...")
        if kind == "localDirectory":
            params.setdefault("ReadWrite", False)
            if not isinstance(params["ReadWrite"], bool):
                raise ValueError("ReadWrite must be true or false; leave it out for read-only")
        return params


class _Source(_Model):
    alias: str = ""
    target: str = ""
    source: SourceSpec

    _alias = field_validator("alias", mode="before")(lambda cls, value: _text(value))

    @field_validator("target")
    @classmethod
    def _inside_the_task(cls, value: str) -> str:
        return value and mount_point(value, "Target")


class InputSource(_Source):
    """An artifact fetched before the task runs and mounted at `target`."""

    target: str = Field(min_length=1)


class ModuleSource(_Source):
    """A WebAssembly module's source; `target` is optional (it names the module)."""


class ResultPath(_Model):
    """A volume of the task whose contents are published as the result."""

    name: str = Field(min_length=1)
    path: str

    @field_validator("name")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.split("/")[0] in RESULT_FILES:
            raise ValueError(f"Name {value!r} is taken by the result's own {value.split('/')[0]} file; choose another")
        return relative_name(value, "Name")

    @field_validator("path")
    @classmethod
    def _inside_the_task(cls, value: str) -> str:
        return mount_point(value, "Path")


class Publisher(_Model):
    """Where results go: `ipfs`, `s3`, `local`, or "" for no publisher."""

    type: Literal["", "ipfs", "s3", "local"] = ""
    params: dict[str, Any] = {}

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        text = "" if value is None else str(value).strip().lower()
        if text in ("", "none", "noop"):
            return ""
        if text in ("ipfs", "s3", "local"):
            return text
        raise ValueError(f"unknown publisher {value!r}; use ipfs, s3, local, or leave it out for none")

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any, info: ValidationInfo) -> Any:
        params = _plain_params(value, "Params")
        if info.data.get("type") == "s3" and isinstance(params, dict):
            missing = [name for name in ("Bucket", "Key") if not params.get(name)]
            if missing:
                raise ValueError(
                    f"the s3 publisher needs {' and '.join(missing)}; add Bucket, Key, Region and Endpoint under Params"
                )
        return params


def _environment(value: Any) -> Any:
    """`KEY=VALUE` and `KEY = VALUE` entries (or a mapping) as an ordered dict."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {_text(key): _text(item) for key, item in value.items()}
    if not isinstance(value, (list, tuple)):
        raise ValueError("EnvironmentVariables is not a list; write entries like - NAME=value")
    environment: dict[str, str] = {}
    for entry in value:
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError(f"environment entry {entry!r} is not KEY=VALUE; write it like NAME=value")
        key, _, item = entry.partition("=")
        if not key.strip():
            raise ValueError(f"environment entry {entry!r} has no name before '='; write it like NAME=value")
        environment[key.strip()] = item.strip()
    return environment


def _show_environment(value: dict[str, str]) -> list[str]:
    return [f"{key}={item}" for key, item in value.items()]


class DockerParams(_Model):
    image: str = Field(min_length=1)
    entrypoint: tuple[str, ...] | None = None  # None: the image's own
    parameters: tuple[str, ...] = ()
    working_directory: str = ""
    environment_variables: dict[str, str] = {}

    _entrypoint = field_validator("entrypoint", mode="before")(lambda cls, v: None if v is None else _text_list(v))
    _parameters = field_validator("parameters", mode="before")(lambda cls, v: _text_list(v))
    _workdir = field_validator("working_directory", mode="before")(lambda cls, v: _text(v))
    _env = field_validator("environment_variables", mode="before")(lambda cls, v: _environment(v))
    _show_env = field_serializer("environment_variables")(lambda self, value: _show_environment(value))


class WasmParams(_Model):
    entry_module: ModuleSource
    entrypoint: str = "_start"
    parameters: tuple[str, ...] = ()
    environment_variables: dict[str, str] = {}
    import_modules: tuple[ModuleSource, ...] = ()

    _entrypoint = field_validator("entrypoint", mode="before")(lambda cls, v: v or "_start")
    _parameters = field_validator("parameters", mode="before")(lambda cls, v: _text_list(v))
    _imports = field_validator("import_modules", mode="before")(_empty_if_none(()))
    _env = field_validator("environment_variables", mode="before")(lambda cls, v: _environment(v))
    _show_env = field_serializer("environment_variables")(lambda self, value: _show_environment(value))


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class DockerEngineSpec(_Model):
    type: Literal["docker"]
    params: DockerParams

    _type = field_validator("type", mode="before")(lambda cls, value: _lower(value))


class WasmEngineSpec(_Model):
    type: Literal["wasm"]
    params: WasmParams

    _type = field_validator("type", mode="before")(lambda cls, value: _lower(value))


def _engine_type(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _lower(value.get("Type", value.get("type")))
    return getattr(value, "type", None)


_ENGINES: dict[str, type[_Model]] = {"docker": DockerEngineSpec, "wasm": WasmEngineSpec}
# `Engine.Type` picks the model that checks `Engine.Params` (case-insensitively).
Engine = Annotated[
    Union[Annotated[DockerEngineSpec, Tag("docker")], Annotated[WasmEngineSpec, Tag("wasm")]],
    Discriminator(_engine_type),
]


class Task(_Model):
    name: str = Field(default="main", min_length=1)
    engine: Engine
    meta: dict[str, str] = {}
    publisher: Publisher = Publisher()
    input_sources: tuple[InputSource, ...] = ()
    result_paths: tuple[ResultPath, ...] = ()
    resources: Resources = Resources()
    network: Network = Network()
    timeouts: Timeouts = Timeouts()

    _name = field_validator("name", mode="before")(lambda cls, v: _text(v) or "main")
    _meta = field_validator("meta", mode="before")(lambda cls, v: _text_map(v))
    _parts = field_validator("publisher", "resources", "network", "timeouts", mode="before")(_empty_if_none({}))
    _lists = field_validator("input_sources", "result_paths", mode="before")(_empty_if_none(()))

    @field_validator("result_paths")
    @classmethod
    def _one_folder_each(cls, value: tuple[ResultPath, ...]) -> tuple[ResultPath, ...]:
        names = [result_path.name for result_path in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two ResultPaths are named {name!r}; each needs a Name of its own")
        return value


# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobDefaults:
    """What a node gives a job that asks for nothing (`Node.Compute.JobDefaults.*`):
    millicores, bytes, seconds; 0 leaves the field unset."""

    cpu: int = 100
    memory: int = 512 << 20
    total_timeout: int = 1800


class JobType(StrEnum):
    BATCH = "batch"
    OPS = "ops"
    DAEMON = "daemon"
    SERVICE = "service"


_EVERY_MATCHING_NODE = (JobType.OPS, JobType.DAEMON)


class JobSpec(_Model):
    """What a submitter may set. `count` is 1+ for batch and service jobs and
    0 for ops and daemon jobs, which run on every matching node."""

    name: str = ""
    namespace: str = "default"
    type: JobType
    priority: int = 0
    count: int = None  # type: ignore[assignment]  # None becomes the type's default
    meta: dict[str, str] = {}
    labels: dict[str, str] = {}
    constraints: tuple[Constraint, ...] = ()
    tasks: tuple[Task, ...]

    _name = field_validator("name", mode="before")(lambda cls, v: _text(v))
    _namespace = field_validator("namespace", mode="before")(lambda cls, v: _text(v) or "default")
    _maps = field_validator("meta", "labels", mode="before")(lambda cls, v: _text_map(v))
    _priority = field_validator("priority", mode="before")(_empty_if_none(0))
    _constraints = field_validator("constraints", mode="before")(_empty_if_none(()))

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {kind.value for kind in JobType}:
            return value.strip().lower()
        raise ValueError(f"unknown job type {value!r}; use batch, ops, daemon or service")

    @field_validator("count", mode="before")
    @classmethod
    def _count_by_type(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind in _EVERY_MATCHING_NODE:
            if value is None or (type(value) is int and value in (0, 1)):
                return 0
            raise ValueError(f"{kind.value} jobs run on every matching node and take no Count; remove Count: {value}")
        return 1 if value is None else value

    @field_validator("count")
    @classmethod
    def _count_at_least_one(cls, value: int, info: ValidationInfo) -> int:
        kind = info.data.get("type")
        if kind in (JobType.BATCH, JobType.SERVICE) and value < 1:
            raise ValueError(f"must be at least 1 for a {kind.value} job, not {value}; set the number of replicas")
        return value

    @field_validator("tasks")
    @classmethod
    def _one_task(cls, tasks: tuple[Task, ...]) -> tuple[Task, ...]:
        if len(tasks) != 1:
            raise ValueError(
                f"exactly one task per job is supported; found {len(tasks)}; keep one task, or submit one job per task"
            )
        return tasks

    def __hash__(self) -> int:
        # A subset of the fields: equal specs still hash equal, and it costs a microsecond, not a tree walk.
        task = self.tasks[0] if self.tasks else None
        return hash((self.name, self.namespace, self.type, self.priority, self.count, self.constraints,
                     task and (task.name, task.engine.type, task.resources)))

    @property
    def task(self) -> Task:
        """The job's only task."""
        return self.tasks[0]

    def with_defaults(self, job_id: str) -> JobSpec:
        """This spec as submitted under `job_id`: a job without a Name is named by its ID."""
        return self if self.name else self.model_copy(update={"name": job_id})

    def with_node_defaults(self, defaults: JobDefaults) -> JobSpec:
        """This spec with the submitting node's defaults where it asks for
        nothing: CPU, memory, and (for batch and ops jobs, which end) a
        TotalTimeout. Filled once, at submit, so the record carries them and
        every node places and runs the job alike."""
        task = self.task
        resources = task.resources.model_copy(
            update={"cpu": task.resources.cpu or defaults.cpu, "memory": task.resources.memory or defaults.memory}
        )
        timeouts = task.timeouts
        if self.type in (JobType.BATCH, JobType.OPS) and not timeouts.total_timeout:
            timeouts = timeouts.model_copy(update={"total_timeout": defaults.total_timeout})
        if resources == task.resources and timeouts == task.timeouts:
            return self
        return self.model_copy(update={"tasks": (task.model_copy(update={"resources": resources, "timeouts": timeouts}),)})

    def to_document(self) -> dict[str, Any]:
        """PascalCase and JSON-safe, as a job file says it; it parses back to an equal spec."""
        document = self.model_dump(mode="json", by_alias=True)
        if self.type in _EVERY_MATCHING_NODE:
            del document["Count"]
        return document


# ---------------------------------------------------------------- reading documents


@dataclass(frozen=True)
class ParsedJob:
    """A valid spec and what reading it warned about (dropped generated fields, ignored settings)."""

    spec: JobSpec
    warnings: tuple[str, ...] = ()


@functools.cache
def _job_loader() -> type[Any]:
    """YAML's safe loader with YAML 1.2 core-schema scalars, as Go reads job
    files: `yes`, `on`, `10:30`, `0755` and dates stay what the user wrote
    (`--start-time 2026-01-01T00:00:00Z` is an argument, not a datetime).

    Made, and PyYAML imported, at the first job file read: the CLI reads
    job files, a peer never does (jobs reach it as JSON from the API and as
    CBOR from peers), and PyYAML is ≈1 MiB of an idle peer's memory."""
    import yaml

    class JobLoader(yaml.SafeLoader):
        pass

    yaml_11_only = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                    "tag:yaml.org,2002:timestamp")
    JobLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in yaml_11_only]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    JobLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    JobLoader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
    )
    JobLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."),
    )

    def yaml_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
        text = str(loader.construct_scalar(node)).replace("_", "")
        try:
            return int(text, 0) if text[:2].lower() in ("0x", "0o", "0b") else int(text, 10)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None

    JobLoader.add_constructor("tag:yaml.org,2002:int", yaml_int)
    return JobLoader


def parse_job(text: str, *, variables: Mapping[str, str] | None = None, render_templates: bool = True) -> ParsedJob:
    """A job file (YAML or JSON; its templates filled first) as a spec.
    Raises `JobSpecError` (or its subclass `TemplateError`)."""
    if render_templates:
        text = render(text, variables or {})
    loader = _job_loader()
    import yaml  # loaded by `_job_loader`

    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - the safe loader, YAML 1.2 scalars
    except RecursionError:
        raise JobSpecError([FieldError("document", "nested too deeply to read", "flatten the document")]) from None
    except (yaml.YAMLError, ValueError, TypeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(error, "problem", None) or str(error)
        hint = "a {{ }} placeholder may need quotes, or -V to fill it" if "{{" in text else "check the YAML syntax"
        raise JobSpecError([FieldError(where, f"not valid YAML or JSON: {problem}", hint)]) from None
    return job_spec_from_data(data)


def job_spec_from_data(data: object) -> ParsedJob:
    """An already-decoded document (the API's JSON) as a spec; raises `JobSpecError`."""
    if not isinstance(data, Mapping):
        raise JobSpecError(
            [FieldError("document", "a job must be a mapping of fields (Type, Tasks, ...)", "start from an example job file")]
        )
    document = dict(data)
    warnings = []
    for name in GENERATED_FIELDS:
        if name in document:
            del document[name]
            warnings.append(f"{name} is generated by the network; it was ignored")
    try:
        spec = JobSpec.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        raise JobSpecError(_field_errors(error)) from None
    return ParsedJob(spec, tuple(warnings) + _warnings(spec))


def _warnings(spec: JobSpec) -> tuple[str, ...]:
    found = []
    for index, task in enumerate(spec.tasks):
        if task.result_paths and spec.type in (JobType.DAEMON, JobType.SERVICE):
            found.append(f"Tasks[{index}].ResultPaths: {spec.type.value} jobs run continuously and publish no results")
        if task.timeouts.queue_timeout and spec.type != JobType.BATCH:
            found.append(f"Tasks[{index}].Timeouts.QueueTimeout: only batch jobs queue; ignored for {spec.type.value} jobs")
    return tuple(found)


# ---------------------------------------------------------------- error wording

_HINTS = {  # pydantic's own error types, by prefix
    "int": "write a whole number",
    "string": "write text (quote it in YAML if it looks like a number or a date)",
    "dict": "write a mapping of Key: value",
    "tuple": "write a list (- item per line)",
    "list": "write a list (- item per line)",
    "bool": "write true or false",
    "too_short": "give at least one character",
    "literal": "use one of the values listed",
}


def _field_errors(error: ValidationError) -> list[FieldError]:
    found = []
    for item in error.errors():
        kind = item["type"]
        raw = list(item["loc"])
        loc, models = _document_loc(raw[:-1] if kind == "extra_forbidden" else raw)
        if kind == "extra_forbidden":
            loc.append(raw[-1])
        path = _path(loc) or "document"
        if kind == "extra_forbidden":
            key = str(raw[-1]) if raw else "?"
            known = {field.alias or name for model in models for name, field in model.model_fields.items()}
            close = _did_you_mean(key, known)
            hint = f"did you mean {close}?" if close else (f"known keys here: {', '.join(sorted(known))}" if known else "")
            found.append(FieldError(path, f"unknown key {key!r}", hint))
        elif kind == "missing":
            found.append(FieldError(path, "is required", "add it; see the example job files"))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            tag = item.get("ctx", {}).get("tag")
            message = f"unknown engine type {tag!r}" if tag is not None else "is required"
            found.append(FieldError(f"{path}.Type", message, "use docker or wasm"))
        elif kind == "value_error":
            # our messages read "what is wrong; how to fix it"
            message, _, hint = str(item["ctx"]["error"]).rpartition("; ")
            found.append(FieldError(path, message, hint) if message else FieldError(path, hint, ""))
        elif kind == "greater_than_equal":
            found.append(FieldError(path, f"must be at least {item['ctx']['ge']}", "0 means none"))
        else:
            hint = next((text for prefix, text in _HINTS.items() if kind.startswith(prefix)), "")
            found.append(FieldError(path, item["msg"], hint))
    return found


def _path(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) and text else (f".{part}" if text else str(part))
    return text


def _document_loc(loc: list[Any]) -> tuple[list[Any], list[type[BaseModel]]]:
    """An error location as the document spells it (aliases, no union tags),
    and the models that could hold keys at its end (for "did you mean")."""
    models: list[type[BaseModel]] = [JobSpec]
    spelled: list[Any] = []
    for at, part in enumerate(loc):
        if isinstance(part, int):
            spelled.append(part)
            continue
        if at and loc[at - 1] == "Engine" and part in _ENGINES:
            models = [_ENGINES[part]]
            continue
        fields = [
            (field.alias or name, field)
            for model in models
            for name, field in model.model_fields.items()
            if part in (name, field.alias)
        ]
        spelled.append(fields[0][0] if fields else part)
        models = [found for _, field in fields for found in _models_in(field.annotation)]
    return spelled, models


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is not None:
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return []


def _did_you_mean(key: str, known: set[str]) -> str | None:
    lowered = {name.lower(): name for name in known}
    if key.lower() in lowered:
        return lowered[key.lower()]
    import difflib  # here: only a mistyped key needs it

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


__all__ = [
    "GENERATED_FIELDS",
    "Constraint",
    "DockerEngineSpec",
    "DockerParams",
    "Engine",
    "FieldError",
    "InputSource",
    "JobSpec",
    "JobSpecError",
    "JobType",
    "ModuleSource",
    "Network",
    "NetworkType",
    "Operator",
    "ParsedJob",
    "Publisher",
    "Resources",
    "ResultPath",
    "SourceSpec",
    "Task",
    "TemplateError",
    "Timeouts",
    "WasmEngineSpec",
    "WasmParams",
    "constraints_match",
    "job_spec_from_data",
    "parse_job",
]
