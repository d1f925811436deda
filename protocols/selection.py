"""A node's job selection policy: which jobs it bids for, and why not.

Theory of operation
-------------------
`decide` runs the checks in a fixed order and stops at the first that fails,
returning a `Decline` whose reason names what failed and what would fix it:

    engine -> publisher -> input storages -> constraints -> resources
    -> network -> stateless -> locality -> probes

When every check passes and the operator configured no probe, the answer is
`ACCEPT`. Probes are I/O, so `decide` only asks for one: it returns a `Probe`
(the exec probe if one is set, else the http probe). The driver runs it and
hands the verdict to `after_probe`, which declines, accepts, or — when the
exec probe said yes and an http probe is set too — asks for the http probe
with the same document. A "wait" verdict is the caller's to hold until the
probe's final answer arrives; `after_probe` only sees final answers.

The probe's HTTP reply is parsed here too (`parse_http_probe_reply`), because
what it means is policy, not I/O. Real probes send JSON with trailing commas
(the reference's own example does), so the reading tolerates them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.events import ProbeVerdict
from protocols.jobspec import JobSpec, JobType, constraints_match
from protocols.messages import Capacity, Locality, PolicySummary
from protocols.quickinit import quick_init

EXEC, HTTP = "exec", "http"
NETWORKED = frozenset({"Full", "HTTP"})
ENDING = (JobType.BATCH, JobType.OPS)  # the types a TotalTimeout bounds; daemons and services run on
NO_PUBLISHER = frozenset({"", "none", "noop"})
# Why a node may lack a storage it knows: a node offers s3 only with AWS credentials.
_WHY_NOT = {"s3": " without AWS credentials"}


@dataclass(frozen=True)
class SelectionPolicy:
    """What the node's operator configured (`Node.Compute.JobSelection.*`)."""

    locality: Locality = Locality.ANYWHERE
    probe_exec: str | None = None
    probe_http: str | None = None
    reject_stateless: bool = False
    accept_networked: bool = False
    max_total_timeout: int = 0  # seconds a batch or ops run may ask for; 0: no cap

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "locality", Locality(self.locality))
        except ValueError:
            raise ValueError(
                f"job selection locality must be 'local' or 'anywhere', not {self.locality!r}"
            ) from None

    def summary(self, probe_timeout: float = 0.0, probe_wait_timeout: float = 0.0) -> PolicySummary:
        """The part a leader may pre-filter on, published in node info, with
        how long this node may take to answer an ask: each probe's time-out,
        and for an http probe (which may hold the bid) the operator's wait."""
        bid_wait = probe_timeout * (bool(self.probe_exec) + bool(self.probe_http))
        if self.probe_http:
            bid_wait += probe_wait_timeout
        return PolicySummary(
            locality=self.locality,
            reject_stateless=self.reject_stateless,
            accept_networked=self.accept_networked,
            probes=bool(self.probe_exec or self.probe_http),
            bid_wait=bid_wait,
        )


@quick_init  # (made again whenever the node's free resources change: a bid or a release)
@dataclass(frozen=True, slots=True)
class LocalNode:
    """What this node is and has free right now."""

    node_id: str
    labels: Mapping[str, str]
    free: Capacity
    engines: frozenset[str]
    publishers: frozenset[str]
    storages: frozenset[str]  # input source types it can fetch
    local_data: frozenset[str]  # CIDs and local paths it holds


@dataclass(frozen=True)
class Accept:
    """Bid for the job."""


ACCEPT = Accept()


@dataclass(frozen=True)
class Decline:
    reason: str


@dataclass(frozen=True)
class Probe:
    """Run the `kind` probe ("exec" or "http") at `target` on `document`, then
    feed its verdict to `after_probe`."""

    kind: str
    target: str
    document: dict[str, Any]


Decision = Accept | Decline | Probe


def decide(policy: SelectionPolicy, node: LocalNode, job_id: str, spec: JobSpec) -> Decision:
    """Whether this node bids for the job, declines it, or asks a probe first."""
    reason = refusal(policy, node, spec)
    if reason is not None:
        return Decline(reason)
    if policy.probe_exec:
        return Probe(EXEC, policy.probe_exec, probe_document(node.node_id, job_id, spec))
    if policy.probe_http:
        return Probe(HTTP, policy.probe_http, probe_document(node.node_id, job_id, spec))
    return ACCEPT


def after_probe(
    policy: SelectionPolicy,
    kind: str,
    verdict: ProbeVerdict,
    document: Mapping[str, Any] | None = None,
) -> Decision:
    """What a probe's final verdict means. After a yes from the exec probe, the
    http probe (if set) is asked next, on `document` — the one the exec probe
    got; pass it, or the http probe cannot run and the job is declined."""
    if verdict.wait:
        return Decline(f"the {kind} probe asked to wait and never gave a final answer")
    if not verdict.bid:
        return Decline(f"the {kind} probe declined the job: {verdict.reason}")
    if kind == EXEC and policy.probe_http:
        if document is None:
            return Decline("the http probe could not run: the probe document was not kept after the exec probe")
        return Probe(HTTP, policy.probe_http, dict(document))
    return ACCEPT


# ---------------------------------------------------------------- the checks


def refusal(policy: SelectionPolicy, node: LocalNode, spec: JobSpec) -> str | None:
    """The first reason this node cannot or will not take the job, if any."""
    task = spec.task
    engine = task.engine.type
    if engine not in node.engines:
        return (
            f"this node has no {engine} engine (it runs {_listing(node.engines)}); "
            f"submit to a node that runs {engine}"
        )
    publisher = _publisher_type(spec)
    if publisher.lower() not in NO_PUBLISHER and publisher not in node.publishers:
        return (
            f"this node cannot publish to {publisher}{_WHY_NOT.get(publisher, '')} "
            f"(it publishes to {_listing(node.publishers)}); "
            f"choose one of those publishers or a node that has {publisher}"
        )
    for source_type in _fetched_source_types(spec):
        if source_type not in node.storages:
            return (
                f"this node cannot fetch {source_type} inputs{_WHY_NOT.get(source_type, '')} "
                f"(it fetches {_listing(node.storages)}); "
                f"enable {source_type} on the node or use another input source"
            )
    for constraint in spec.constraints or ():
        if not constraints_match([constraint], node.labels):
            return (
                f"constraint {_constraint_text(constraint)} does not hold on this node's labels "
                f"({_labels_text(node.labels)}); relax the constraint or label a node to match"
            )
    shortfall = _resource_shortfall(task.resources, node.free)
    if shortfall is not None:
        return shortfall
    network = task.network.type
    if network in NETWORKED and not policy.accept_networked:
        return (
            f"the job needs network access ({network}) and this node refuses networked jobs; "
            "its operator can allow them with --job-selection-accept-networked"
        )
    timeout = task.timeouts.total_timeout
    if policy.max_total_timeout and spec.type in ENDING and not 0 < timeout <= policy.max_total_timeout:
        asked = f"a TotalTimeout of {timeout} s" if timeout else "no TotalTimeout"
        return (
            f"the job asks for {asked} and this node runs jobs for at most {policy.max_total_timeout} s; "
            "set Timeouts.TotalTimeout within that, or its operator can raise "
            "--job-selection-max-total-timeout"
        )
    if not task.input_sources and policy.reject_stateless:
        return (
            "the job names no input data and this node rejects stateless jobs; "
            "add an input source, or its operator can drop --job-selection-reject-stateless"
        )
    if policy.locality == Locality.LOCAL:
        for source in task.input_sources:
            missing = _not_held(source, node.local_data)
            if missing is not None:
                return (
                    f"this node takes only jobs whose data it holds, and {missing}; "
                    "submit to a node holding the data, or its operator can set --job-selection-data-locality anywhere"
                )
    return None


def fit_key(spec: JobSpec) -> tuple[Any, ...]:
    """Everything of the spec that `refusal` reads: specs with equal keys
    fit the same nodes, so a leader can check each node once per shape of
    job rather than once per job."""
    task = spec.task
    r = task.resources
    return (
        task.engine.type,
        _publisher_type(spec),
        tuple(_fetched_source_types(spec)),
        repr(spec.constraints),
        (r.cpu, r.memory, r.disk, r.gpu),
        task.network.type,
        repr(task.input_sources),
        spec.type,
        task.timeouts.total_timeout,
    )


def _publisher_type(spec: JobSpec) -> str:
    publisher = spec.task.publisher
    return (publisher.type or "") if publisher is not None else ""


def _fetched_source_types(spec: JobSpec) -> list[str]:
    """Types of every input source the node must fetch: inputs and wasm modules."""
    task = spec.task
    sources = [source.source for source in task.input_sources]
    if task.engine.type == "wasm":
        params = task.engine.params
        modules = (params.entry_module, *(params.import_modules or ()))
        sources += [module.source for module in modules if module is not None]
    return [source.type for source in sources]


def _not_held(source: Any, local_data: frozenset[str]) -> str | None:
    """Why an input source is not held here, or None if it is."""
    kind, params = source.source.type, source.source.params
    if kind == "ipfs":
        cid = params.get("CID", "")
        return None if cid in local_data else f"it does not hold the ipfs input {cid!r}"
    if kind == "localDirectory":
        path = params.get("SourcePath", "")
        return None if path in local_data else f"it does not hold the local directory {path!r}"
    return f"{kind} inputs are fetched from elsewhere and are never local"


def _resource_shortfall(resources: Any, free: Capacity) -> str | None:
    if free.covers(resources.cpu, resources.memory, resources.disk, resources.gpu):
        return None  # (most asks: the explanation below is for the others)
    wanted = (
        ("CPU", resources.cpu, free.cpu, _cores),
        ("memory", resources.memory, free.memory, _bytes),
        ("disk", resources.disk, free.disk, _bytes),
        ("GPU", resources.gpu, free.gpu, _count),
    )
    for name, needed, available, unit in wanted:
        if needed > available:
            return (
                f"not enough {name}: the job needs {unit(needed)}, this node has {unit(available)} free; "
                f"ask for less {name} or wait until this node's work finishes"
            )
    return None


# ---------------------------------------------------------------- probe documents


def probe_document(node_id: str, job_id: str, spec: JobSpec) -> dict[str, Any]:
    """The JSON document both probes get: the reference's shape plus the whole
    job and its resources. (There are no verifiers here: `verifier` is "noop".)"""
    task = spec.task
    described: dict[str, Any] = {
        "engine": task.engine.type,
        "verifier": "noop",
        "publisher": _publisher_type(spec),
        "inputs": [_input_document(source) for source in task.input_sources],
    }
    params = task.engine.params
    if task.engine.type == "wasm":
        described["job_spec_wasm"] = {
            "entry_module": _input_document(params.entry_module) if params.entry_module is not None else None,
            "entrypoint": params.entrypoint,
            "parameters": list(params.parameters or ()),
            "environment_variables": dict(params.environment_variables or {}),
            "import_modules": [_input_document(module) for module in params.import_modules or ()],
        }
    else:
        described["job_spec_vm"] = {
            "image": params.image,
            "entrypoint": list(params.entrypoint or ()),
            "parameters": list(params.parameters or ()),
            "working_directory": params.working_directory or "",
            "environment_variables": dict(params.environment_variables or {}),
        }
    resources = task.resources
    document: dict[str, Any] = {
        "node_id": node_id,
        "job_id": job_id,
        "spec": described,
        "resources": {"cpu": resources.cpu, "memory": resources.memory, "disk": resources.disk, "gpu": resources.gpu},
        "network": {"type": str(task.network.type), "domains": list(task.network.domains or ())},
    }
    to_document = getattr(spec, "to_document", None)
    if callable(to_document):
        document["job"] = to_document()
    return document


def _input_document(source: Any) -> dict[str, Any]:
    params = dict(source.source.params or {})
    return {
        "engine": source.source.type,
        "cid": str(params.get("CID", "")),
        "path": source.target or "",
        "params": params,
    }


# ---------------------------------------------------------------- probe replies


def exec_probe_verdict(exit_code: int, output: str) -> ProbeVerdict:
    """Exit status 0 takes the job; anything else declines, quoting the output."""
    if exit_code == 0:
        return ProbeVerdict(bid=True, reason="the exec probe exited 0")
    first_line = next((line.strip() for line in output.splitlines() if line.strip()), "")
    said = f": {first_line[:200]}" if first_line else " (no output)"
    return ProbeVerdict(bid=False, reason=f"the exec probe exited with status {exit_code}{said}")


def parse_http_probe_reply(status: int, body: bytes) -> ProbeVerdict:
    """What an http probe's reply means: an error status declines; a JSON body
    of the schema `{shouldBid, shouldWait?, reason}` decides; anything else
    takes the job."""
    decision = _decision(body)
    if status >= 400:
        detail = decision["reason"] if decision is not None else _first_line(body)
        return ProbeVerdict(bid=False, reason=f"the http probe answered {status}" + (f": {detail}" if detail else ""))
    if decision is None:
        return ProbeVerdict(bid=True, reason=f"the http probe answered {status} without a decision")
    if decision.get("shouldWait", False):
        return ProbeVerdict(bid=False, wait=True, reason=decision["reason"])
    return ProbeVerdict(bid=decision["shouldBid"], reason=decision["reason"])


def _decision(body: bytes) -> dict[str, Any] | None:
    """The body as a decision of the schema, or None if it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parsed = _lenient_json(text)
    if not isinstance(parsed, dict):
        return None
    should_bid, should_wait, reason = parsed.get("shouldBid"), parsed.get("shouldWait", False), parsed.get("reason")
    if not isinstance(should_wait, bool) or not isinstance(reason, str):
        return None
    if not should_wait and not isinstance(should_bid, bool):
        return None  # shouldBid is required, unless the answer comes later
    return parsed


def _lenient_json(text: str) -> Any:
    """JSON, also with trailing commas before `}` or `]`; None if not JSON."""
    for candidate in (text, _without_trailing_commas(text)):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _without_trailing_commas(text: str) -> str:
    """Drop each comma that only whitespace separates from a closing `}` or
    `]`, leaving string contents untouched."""
    out: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "}]":
            end = len(out)
            while end and out[end - 1].isspace():
                end -= 1
            if end and out[end - 1] == ",":
                del out[end - 1]
        out.append(char)
    return "".join(out)


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0][:200] if text else ""


# ---------------------------------------------------------------- wording


def _listing(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _constraint_text(constraint: Any) -> str:
    values = ",".join(str(value) for value in constraint.values or ())
    return repr(f"{constraint.key} {constraint.operator} {values}".strip())


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items())) or "none"


def _cores(millicores: int) -> str:
    cores = millicores / 1000
    return f"{cores:g} core" + ("" if cores == 1 else "s")


def _bytes(amount: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if amount >= size:
            return f"{amount / size:.3g} {unit}"
    return f"{amount} B"


def _count(amount: int) -> str:
    return str(amount)
