"""What a node's state machine is fed (inputs) and what it asks for (effects).

A driver — the real node in `p2pnode/` or the simulator in `sim/` — turns the
world into inputs, calls `Node.handle(input, now)`, and carries out the effects
it gets back, in order. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from protocols.jobspec import JobSpec
from protocols.quickinit import quick_init_module
from protocols.records import ExecutionRecord, ExecutionResult, ExecutionState, JobHeader

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Received:
    """A message arrived from a peer, by pubsub or on a stream."""

    sender: str
    message: object


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A `Send` could not be delivered (peer unreachable, stream reset)."""

    peer: str
    message: object
    reason: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: Hashable


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """A local client submits a job; the driver chose its unique id
    (`protocols.jobid.make_job_id` with this node, `salt` and `spec`)."""

    job_id: str
    spec: JobSpec
    salt: str = ""


@dataclass(frozen=True, slots=True)
class FetchJob:
    """A local client asks after a job this node does not keep: ask its keepers."""

    job_id: str


@dataclass(frozen=True, slots=True)
class StopJob:
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    """A probe's answer. `wait` holds the bid until a later verdict comes."""

    bid: bool
    reason: str
    wait: bool = False


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    execution_id: str
    verdict: ProbeVerdict


@dataclass(frozen=True, slots=True)
class ExecutionProgressed:
    """The engine moved an execution on (e.g. to Publishing)."""

    execution_id: str
    state: ExecutionState
    message: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionEnded:
    execution_id: str
    ok: bool
    result: ExecutionResult
    message: str = ""


@dataclass(frozen=True, slots=True)
class EnginesChanged:
    """The engines this node can run now (a Docker daemon stopped or came back)."""

    engines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DataHeld:
    """This node now holds (or, `held` false, no longer holds) these root
    CIDs: it announces itself as their provider and bids for `local` jobs
    that read them."""

    cids: tuple[str, ...]
    held: bool = True


@dataclass(frozen=True, slots=True)
class FindProviders:
    """A local reader wants to know who holds `cid` (answered by `ProvidersFound`)."""

    cid: str


Input = (
    Received
    | SendFailed
    | TimerFired
    | SubmitJob
    | FetchJob
    | StopJob
    | ProbeAnswered
    | ExecutionProgressed
    | ExecutionEnded
    | EnginesChanged
    | DataHeld
    | FindProviders
)

# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    message: object


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver reliably to one peer on a stream; failure comes back as
    `SendFailed`."""

    peer: str
    message: object


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire `TimerFired(key)` at `at`; a timer with the same key is replaced."""

    key: Hashable
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: Hashable


@dataclass(frozen=True, slots=True)
class RunProbe:
    """Run the node's probe (`kind` "exec" or "http") on `document`; answer
    with `ProbeAnswered`."""

    execution_id: str
    kind: str
    target: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartExecution:
    """Run the task; report with `ExecutionProgressed` / `ExecutionEnded`."""

    execution: ExecutionRecord
    header: JobHeader


@dataclass(frozen=True, slots=True)
class StopExecution:
    execution_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job's replica changed here: persist it, wake its watchers."""

    job_id: str


@dataclass(frozen=True, slots=True)
class ProvidersFound:
    """The answer to `FindProviders`: the live nodes known to hold `cid`."""

    cid: str
    providers: tuple[str, ...]


Effect = (
    Publish
    | Send
    | SetTimer
    | CancelTimer
    | RunProbe
    | StartExecution
    | StopExecution
    | JobChanged
    | ProvidersFound
)


quick_init_module(globals())
