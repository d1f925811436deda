"""The job specification: every field of a job file, read, checked, normalised.

Users write PascalCase keys in YAML or JSON (see `shared/spec/jobs.md`); the
models keep snake_case attributes with PascalCase aliases and are frozen, so
one spec can be shared by many simulated nodes. Amounts become exact integers
(millicores, bytes). Every problem in a document is reported at once, each
with its path, what is wrong and how to fix it (`JobSpecError`).

The fields the network sets (ID, State, Version, Revision, CreateTime,
ModifyTime) are not part of a spec: a document that carries them has them
dropped, with a warning.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from protocols.errors import FieldError, JobSpecError, TemplateError
from protocols.templating import render
from protocols.units import format_cpu, parse_bytes, parse_gpu, parse_cpu

_SEPARATOR = "\n"  # between several problems one validator found
GENERATED_FIELDS = ("ID", "State", "Version", "Revision", "CreateTime", "ModifyTime")
_NAMED = re.compile(r"^([A-Z][A-Za-z]*): (.*)$", re.DOTALL)  # "Count: ..." from a whole-document check
_ACRONYMS = {"cpu": "CPU", "gpu": "GPU", "cid": "CID", "url": "URL"}


def _alias(name: str) -> str:
    return "".join(_ACRONYMS.get(part, part.capitalize()) for part in name.split("_"))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=_alias, extra="forbid", frozen=True, validate_default=True
    )


def _strings(value: Any) -> Any:
    """YAML reads `5` as a number and an empty `- ` as null; a job file's
    strings mean text either way."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _string_list(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_strings(item) for item in value)
    return value


def _string_map(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(key): _strings(item) for key, item in value.items()}
    return value


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


_ARITY = {
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
    """A selector on node labels: `Key`, `Operator`, `Values`."""

    key: str = Field(min_length=1)
    operator: Operator
    values: tuple[str, ...] = ()

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {op.value for op in Operator}:
            return value.strip().lower()
        raise ValueError(f"unknown operator {value!r}; use one of {', '.join(op.value for op in Operator)}")

    _values = field_validator("values", mode="before")(lambda cls, v: _string_list([] if v is None else v))

    @model_validator(mode="after")
    def _arity(self) -> Constraint:
        low, high = _ARITY[self.operator]
        count = len(self.values)
        if count < low or (high is not None and count > high):
            wanted = "no values" if high == 0 else ("exactly one value" if high == 1 else "at least one value")
            raise ValueError(f"operator {self.operator.value!r} takes {wanted}, got {count}")
        if self.operator in (Operator.GREATER_THAN, Operator.LESS_THAN) and _number(self.values[0]) is None:
            raise ValueError(f"operator {self.operator.value!r} compares numbers; {self.values[0]!r} is not one")
        return self

    @cached_property
    def _test(self) -> Any:
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
        if op == Operator.GREATER_THAN:
            return lambda labels: (n := _number(labels.get(key))) is not None and n > bound
        return lambda labels: (n := _number(labels.get(key))) is not None and n < bound

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels satisfies the constraint (a node
        lacking the key satisfies `!=`, `notin` and `!`)."""
        return bool(self._test(labels))


def constraints_match(constraints: tuple[Constraint, ...] | list[Constraint], labels: Mapping[str, str]) -> bool:
    return all(constraint.matches(labels) for constraint in constraints)


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value))
    except ValueError:
        return None


# ---------------------------------------------------------------- task parts


class Resources(_Model):
    cpu: int = 0  # millicores
    memory: int = 0  # bytes
    disk: int = 0  # bytes
    gpu: int = 0

    _cpu = field_validator("cpu", mode="before")(lambda cls, v: 0 if v in (None, "") else parse_cpu(v))
    _memory = field_validator("memory", mode="before")(
        lambda cls, v: 0 if v in (None, "") else parse_bytes(v, "Memory")
    )
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
    type: NetworkType = NetworkType.NONE
    domains: tuple[str, ...] = ()

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        for kind in NetworkType:
            if isinstance(value, str) and value.strip().lower() == kind.value.lower():
                return kind
        if value is None:
            return NetworkType.NONE
        raise ValueError(f"unknown network type {value!r}; use None, Full or HTTP")

    @model_validator(mode="after")
    def _domains_only_with_http(self) -> Network:
        if self.domains and self.type != NetworkType.HTTP:
            raise ValueError(f"Domains only apply to Type HTTP (this is {self.type.value}); drop them or use HTTP")
        return self


class Timeouts(_Model):
    queue_timeout: int = Field(default=0, ge=0)  # seconds; 0 = do not queue
    total_timeout: int = Field(default=0, ge=0)  # seconds; 0 = no limit


_SOURCE_TYPES = {"ipfs": "ipfs", "localdirectory": "localDirectory", "s3": "s3", "url": "url", "inline": "inline"}
_REQUIRED_PARAMS = {"ipfs": ("CID",), "localDirectory": ("SourcePath",), "s3": ("Bucket", "Key"), "url": ("URL",), "inline": ("URL",)}


class SourceSpec(_Model):
    type: str
    params: dict[str, Any] = {}

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _SOURCE_TYPES:
            return _SOURCE_TYPES[value.strip().lower()]
        raise ValueError(f"unknown source type {value!r}; use one of {', '.join(_SOURCE_TYPES.values())}")

    _params = field_validator("params", mode="before")(lambda cls, v: {} if v is None else v)

    @model_validator(mode="after")
    def _required(self) -> SourceSpec:
        missing = [name for name in _REQUIRED_PARAMS[self.type] if not self.params.get(name)]
        if missing:
            raise ValueError(f"a {self.type} source needs Params.{' and Params.'.join(missing)}")
        if self.type == "inline" and not str(self.params["URL"]).startswith("data:"):
            raise ValueError("an inline source's Params.URL must be a data: URL (data:[type][;base64],...)")
        if "ReadWrite" in self.params and not isinstance(self.params["ReadWrite"], bool):
            raise ValueError("Params.ReadWrite must be true or false")
        return self


class InputSource(_Model):
    alias: str = ""
    target: str = ""
    source: SourceSpec

    @field_validator("target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"Target {value!r} must be an absolute path, like /data")
        return value


class ResultPath(_Model):
    name: str = Field(min_length=1)
    path: str

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"Path {value!r} must be an absolute path, like /outputs")
        return value


class Publisher(_Model):
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

    _params = field_validator("params", mode="before")(lambda cls, v: {} if v is None else v)

    @model_validator(mode="after")
    def _s3(self) -> Publisher:
        if self.type == "s3":
            missing = [name for name in ("Bucket", "Key") if not self.params.get(name)]
            if missing:
                raise ValueError(f"the s3 publisher needs Params.{' and Params.'.join(missing)} (and Region, Endpoint where not default)")
        return self


def _environment(value: Any) -> Any:
    """`KEY=VALUE` and `KEY = VALUE` entries, or a mapping, as an ordered dict."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): _strings(v) for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise ValueError("EnvironmentVariables must be a list of KEY=VALUE entries")
    environment: dict[str, str] = {}
    for entry in value:
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError(f"environment entry {entry!r} is not KEY=VALUE")
        key, _, item = entry.partition("=")
        if not key.strip():
            raise ValueError(f"environment entry {entry!r} has no name before '='")
        environment[key.strip()] = item.strip()
    return environment


class DockerParams(_Model):
    image: str = Field(min_length=1)
    entrypoint: tuple[str, ...] | None = None
    parameters: tuple[str, ...] = ()
    working_directory: str = ""
    environment_variables: dict[str, str] = {}

    _lists = field_validator("entrypoint", "parameters", mode="before")(lambda cls, v: _string_list(v))
    _workdir = field_validator("working_directory", mode="before")(lambda cls, v: "" if v is None else v)
    _env = field_validator("environment_variables", mode="before")(lambda cls, v: _environment(v))

    @field_serializer("environment_variables")
    def _show_env(self, value: dict[str, str]) -> list[str]:
        return [f"{key}={item}" for key, item in value.items()]


class WasmParams(_Model):
    entry_module: InputSource
    entrypoint: str = "_start"
    parameters: tuple[str, ...] = ()
    environment_variables: dict[str, str] = {}
    import_modules: tuple[InputSource, ...] = ()

    _entry = field_validator("entrypoint", mode="before")(lambda cls, v: v or "_start")
    _lists = field_validator("parameters", mode="before")(lambda cls, v: _string_list(() if v is None else v))
    _imports = field_validator("import_modules", mode="before")(lambda cls, v: () if v is None else v)
    _env = field_validator("environment_variables", mode="before")(lambda cls, v: _environment(v))

    @field_serializer("environment_variables")
    def _show_env(self, value: dict[str, str]) -> list[str]:
        return [f"{key}={item}" for key, item in value.items()]


class Engine(_Model):
    type: Literal["docker", "wasm"]
    params: Union[DockerParams, WasmParams]

    @model_validator(mode="before")
    @classmethod
    def _params_by_type(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        kind = data.get("Type", data.get("type"))
        if isinstance(kind, str):
            kind = kind.strip().lower()
            data["Type" if "Type" in data else "type"] = kind
        if kind not in ("docker", "wasm"):
            raise ValueError(f"Engine.Type must be docker or wasm, not {kind!r}")
        key = "Params" if "Params" in data else "params"
        params = data.get(key)
        model = DockerParams if kind == "docker" else WasmParams
        data[key] = model.model_validate(params if params is not None else {})
        return data


class Task(_Model):
    name: str = "main"
    engine: Engine
    meta: dict[str, str] = {}
    publisher: Publisher = Publisher()
    input_sources: tuple[InputSource, ...] = ()
    result_paths: tuple[ResultPath, ...] = ()
    resources: Resources = Resources()
    network: Network = Network()
    timeouts: Timeouts = Timeouts()

    _name = field_validator("name", mode="before")(lambda cls, v: v or "main")
    _meta = field_validator("meta", mode="before")(lambda cls, v: _string_map(v))
    _none_is_default = field_validator(
        "publisher", "resources", "network", "timeouts", mode="before"
    )(lambda cls, v: {} if v is None else v)
    _none_is_empty = field_validator("input_sources", "result_paths", mode="before")(
        lambda cls, v: () if v is None else v
    )

    @field_validator("input_sources")
    @classmethod
    def _targets(cls, sources: tuple[InputSource, ...]) -> tuple[InputSource, ...]:
        for index, source in enumerate(sources):
            if not source.target:
                raise ValueError(f"InputSources[{index}] needs a Target: the absolute path it is mounted at")
        return sources


# ---------------------------------------------------------------- the job


class JobType(StrEnum):
    BATCH = "batch"
    OPS = "ops"
    DAEMON = "daemon"
    SERVICE = "service"


class JobSpec(_Model):
    """What a submitter may set. `count` is 1+ for batch and service jobs and
    0 for ops and daemon jobs, which run on every matching node."""

    name: str = ""
    namespace: str = "default"
    type: JobType
    priority: int = 0
    count: int = 0
    meta: dict[str, str] = {}
    labels: dict[str, str] = {}
    constraints: tuple[Constraint, ...] = ()
    tasks: tuple[Task, ...]

    _text = field_validator("name", mode="before")(lambda cls, v: "" if v is None else v)
    _namespace = field_validator("namespace", mode="before")(lambda cls, v: v or "default")
    _maps = field_validator("meta", "labels", mode="before")(lambda cls, v: _string_map(v))
    _constraints = field_validator("constraints", mode="before")(lambda cls, v: () if v is None else v)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {t.value for t in JobType}:
            return value.strip().lower()
        raise ValueError(f"unknown job type {value!r}; use batch, ops, daemon or service")

    @model_validator(mode="before")
    @classmethod
    def _count_by_type(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        key = "Count" if "Count" in data or "count" not in data else "count"
        count = data.get(key)
        kind = str(data.get("Type", data.get("type", ""))).strip().lower()
        if kind in ("batch", "service") and count is None:
            data[key] = 1
        elif kind in ("ops", "daemon"):
            if isinstance(count, int) and not isinstance(count, bool) and count > 1:
                raise ValueError(f"Count: {kind} jobs run on every matching node and take no Count; remove Count: {count}")
            data[key] = 0
        return data

    @model_validator(mode="after")
    def _checks(self) -> JobSpec:
        problems = []
        if self.type in (JobType.BATCH, JobType.SERVICE) and self.count < 1:
            problems.append(f"Count: must be at least 1 for a {self.type.value} job, not {self.count}")
        if len(self.tasks) != 1:
            problems.append(f"Tasks: exactly one task per job is supported; found {len(self.tasks)}")
        if problems:
            raise ValueError(_SEPARATOR.join(problems))
        return self

    @property
    def task(self) -> Task:
        return self.tasks[0]

    def to_document(self) -> dict[str, Any]:
        """PascalCase and JSON-safe: what a job file of this spec says."""
        document = self.model_dump(mode="json", by_alias=True)
        if self.type in (JobType.OPS, JobType.DAEMON):
            document.pop("Count")
        return document


class _JobLoader(yaml.SafeLoader):
    """YAML's safe loader, but a date stays the text the user wrote
    (`--start-time 2026-01-01T00:00:00Z` is an argument, not a datetime)."""


_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class ParsedJob:
    spec: JobSpec
    warnings: tuple[str, ...] = ()


def parse_job(
    text: str, *, variables: Mapping[str, str] | None = None, render_templates: bool = True
) -> ParsedJob:
    """A job file (YAML or JSON, templates filled first) as a spec."""
    if render_templates:
        text = render(text, variables or {})
    try:
        data = yaml.load(text, Loader=_JobLoader)  # noqa: S506 - a safe loader, minus timestamps
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(error, "problem", None) or str(error)
        hint = "a {{ }} placeholder may need quotes, or -V to fill it" if "{" in text else "check the YAML syntax"
        raise JobSpecError([FieldError(where, f"not valid YAML or JSON: {problem}", hint)]) from None
    return job_spec_from_data(data)


def job_spec_from_data(data: object) -> ParsedJob:
    """An already-decoded document (the API's JSON) as a spec."""
    if not isinstance(data, Mapping):
        raise JobSpecError([FieldError("document", "a job must be a mapping of fields (Type, Tasks, ...)",
                                       "start from one of the example job files")])
    document = dict(data)
    warnings = []
    for name in GENERATED_FIELDS:
        if name in document:
            del document[name]
            warnings.append(f"{name} is generated by the network; it was ignored")
    kind = str(document.get("Type", "")).lower()
    tasks = document.get("Tasks")
    if isinstance(tasks, list):
        for index, task in enumerate(tasks):
            if not isinstance(task, Mapping):
                continue
            if task.get("ResultPaths") and kind in ("daemon", "service"):
                warnings.append(f"Tasks[{index}].ResultPaths: {kind} jobs run continuously and publish no results")
            timeouts = task.get("Timeouts")
            if isinstance(timeouts, Mapping) and timeouts.get("QueueTimeout") and kind not in ("batch", ""):
                warnings.append(f"Tasks[{index}].Timeouts.QueueTimeout: only batch jobs queue; it is ignored for {kind} jobs")
    try:
        spec = JobSpec.model_validate(document)
    except ValidationError as error:
        raise JobSpecError(_field_errors(error)) from None
    return ParsedJob(spec, tuple(warnings))


# ---------------------------------------------------------------- error wording


def _field_errors(error: ValidationError) -> list[FieldError]:
    found = []
    for item in error.errors():
        loc = [part for part in item["loc"] if not (isinstance(part, str) and part.startswith(("function-", "union[")))]
        loc = [part for part in loc if part not in ("DockerParams", "WasmParams")]
        for at, part in enumerate(loc[:-1]):
            if part == "Engine" and loc[at + 1] not in ("Type", "Params"):
                loc.insert(at + 1, "Params")  # params are checked inside Engine's own validator
                break
        path = _path(loc)
        kind = item["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            known = _known_keys(loc[:-1])
            close = _did_you_mean(key, known)
            hint = f"did you mean {close}?" if close else (f"known keys here: {', '.join(sorted(known))}" if known else "")
            found.append(FieldError(path, f"unknown key {key!r}", hint))
        elif kind == "missing":
            found.append(FieldError(path, "is required", "add it; see the example job files"))
        elif kind == "greater_than_equal":
            found.append(FieldError(path, f"must be at least {item['ctx']['ge']}", "0 means none"))
        else:
            for message in item["msg"].removeprefix("Value error, ").split(_SEPARATOR):
                named = _NAMED.match(message)
                if named and not path:
                    found.append(FieldError(named.group(1), named.group(2), ""))
                else:
                    found.append(FieldError(path or "document", message, ""))
    return found


def _path(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _known_keys(loc: list[Any]) -> set[str]:
    """The keys allowed at a place in the document, for "did you mean"."""
    models: list[type[BaseModel]] = [JobSpec]
    for part in loc:
        if isinstance(part, int):
            continue
        following: list[type[BaseModel]] = []
        for model in models:
            for name, field in model.model_fields.items():
                if field.alias == part or name == part:
                    following.extend(_models_in(field.annotation))
        models = following
    return {field.alias or name for model in models for name, field in model.model_fields.items()}


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
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


__all__ = [
    "Constraint",
    "DockerParams",
    "Engine",
    "FieldError",
    "InputSource",
    "JobSpec",
    "JobSpecError",
    "JobType",
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
    "WasmParams",
    "constraints_match",
    "job_spec_from_data",
    "parse_job",
]
