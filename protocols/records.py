"""The replicated job record: states, executions, history, and their merge.

Theory of operation
-------------------
A job's record is kept by its *keepers*: its leader, the successors the
submitter ranked for it (rendezvous hashing over the live members), and the
node it was submitted to; nodes running its work receive its writes too. So a
job costs a bounded number of messages however large the network, and any
other node answers for it by asking its keepers. One node writes a job at a time: its leader, identified by an
*epoch* that grows by one at every failover. Each write bumps the job's
*revision*. Writes travel as deltas (`JobHeader` plus the changed
`ExecutionRecord`s and the new `HistoryEvent`s) and are applied idempotently,
so a delta that arrives twice, late, or out of order does no harm:

- an ended job stays ended (Completed above the other ends), so no leader,
  stale or new, can write it back to life;
- otherwise job-level fields come from the header with the highest ``(epoch, revision)``;
- each execution keeps the copy with the highest ``(settled, epoch, finality,
  progress, revision)`` of its own: a deposed leader's late writes lose to
  the new leader's; within one epoch an ended execution stays ended, and a
  copy further along its lifecycle (`EXECUTION_PROGRESS`) wins, so the
  executor's own record of a run it started (revision 0) beats the ask that
  a leader restarted from a stale store still holds (it decided the round,
  then crashed before it saved that); ties, which only two leaders of one
  epoch can make, break on the remaining fields. A
  completion is a fact its node reported, so it is *settled*: a leader on
  the other side of a split that gave the run up for lost (a guess) cannot
  overrule it; only a cancellation, which is settled too, from a newer epoch
  can (a healed split's second completion of a batch partition);
- history is a set ordered by ``(time, seq, node, ...)``, trimmed to the newest
  `HISTORY_LIMIT` events.

The merge is commutative, associative and idempotent, so replicas that have
seen the same writes hold the same record whatever the order — the property
that lets gossip be best effort and anti-entropy repair the rest.

Records travel by reference inside one process (the simulator), so everything
that goes on the wire is frozen.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from protocols.jobspec import JobSpec
from protocols.quickinit import quick_init_module

HISTORY_LIMIT = 200


class JobState(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_JOB_STATES


_TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.STOPPED})


class ExecutionState(StrEnum):
    """Where an execution is, from the leader's first ask to its end."""

    NEW = "New"
    ASK_FOR_BID = "AskForBid"
    ASK_FOR_BID_ACCEPTED = "AskForBidAccepted"  # the node bid
    ASK_FOR_BID_REJECTED = "AskForBidRejected"  # the node declined
    BID_ACCEPTED = "BidAccepted"  # the leader chose this bid
    BID_REJECTED = "BidRejected"  # the leader chose others
    RUNNING = "Running"
    PUBLISHING = "Publishing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_EXECUTION_STATES

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) resources on its node."""
        return self in _ACTIVE_EXECUTION_STATES


_TERMINAL_EXECUTION_STATES = frozenset(
    {
        ExecutionState.ASK_FOR_BID_REJECTED,
        ExecutionState.BID_REJECTED,
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.CANCELLED,
    }
)
_ACTIVE_EXECUTION_STATES = frozenset(
    {ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING, ExecutionState.PUBLISHING}
)


# An ended job or execution stays ended: a leader that restarted with stale
# state, or took over without seeing the end, cannot write it back to life.
# Completed outranks the other ends: the work was done. (Job and execution
# states share values, so one table serves both.)
_FINGERPRINT_BITS = (1 << 63) - 1
_SETTLED = {ExecutionState.COMPLETED: 1, ExecutionState.CANCELLED: 1}  # ends no guess may overrule

# How far along an execution is (its lifecycle, `protocols.lifecycle`): a
# report moves it forward only, and within one epoch the copy further along
# wins a merge. Here, not in `lifecycle`, so the merge can use it (lifecycle
# imports this module).
EXECUTION_PROGRESS: dict[ExecutionState, int] = {
    ExecutionState.NEW: 0,
    ExecutionState.ASK_FOR_BID: 1,
    ExecutionState.ASK_FOR_BID_ACCEPTED: 2,
    ExecutionState.ASK_FOR_BID_REJECTED: 2,
    ExecutionState.BID_ACCEPTED: 3,
    ExecutionState.BID_REJECTED: 3,
    ExecutionState.RUNNING: 4,
    ExecutionState.PUBLISHING: 5,
    ExecutionState.COMPLETED: 6,
    ExecutionState.FAILED: 6,
    ExecutionState.CANCELLED: 6,
}

_FINALITY = {
    JobState.COMPLETED: 2,
    JobState.FAILED: 1,
    JobState.STOPPED: 1,
    ExecutionState.CANCELLED: 1,
    ExecutionState.ASK_FOR_BID_REJECTED: 1,
    ExecutionState.BID_REJECTED: 1,
}


class DesiredState(StrEnum):
    """What the leader wants of an execution; executors converge on it."""

    PENDING = "Pending"
    RUNNING = "Running"
    STOPPED = "Stopped"


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What an execution produced. `location` names where the published
    result lives for its publisher (a CID for ipfs, a path for local)."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    publisher: str = ""
    location: str = ""
    error: str = ""
    # The job itself failed (its exit code, a trap, its TotalTimeout or memory
    # limit): another node would fail it alike, so it is not retried unless
    # the job asks (`protocols.leader.RETRIES_META`).
    job_fault: bool = False


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    id: str
    job_id: str
    node_id: str
    partition: int
    state: ExecutionState
    desired: DesiredState
    epoch: int
    revision: int
    create_time: float
    modify_time: float
    message: str = ""
    result: ExecutionResult | None = None
    # Which copy wins a merge: a settled end (see the module notes); then a
    # newer leader; within one leader's epoch an end is final (a leader that
    # restarted with stale state cannot undo it), then the copy further
    # along; the tail breaks ties. Computed once: merges compare it often.
    order: tuple[int, int, int, int, int, float, str] = field(init=False, repr=False, compare=False)
    # What the record adds to its replica's `fingerprint`: grows with the
    # head of `order`. Computed once too: every merge of it adds one and
    # takes away the copy it replaces.
    weight: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        state = self.state  # (`_value_`, not `value`: an enum's `value` is a property, and records are made per write)
        settled, finality, progress = _SETTLED.get(state, 0), _FINALITY.get(state, 0), EXECUTION_PROGRESS[state]
        key = (settled, self.epoch, finality, progress, self.revision, self.modify_time, state._value_)
        object.__setattr__(self, "order", key)
        weight = (settled << 60) + (self.epoch << 48) + (finality << 44) + (progress << 40) + self.revision
        object.__setattr__(self, "weight", weight)


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One recorded transition of a job or of one of its executions."""

    time: float
    seq: int  # the writer's counter, to order events of the same instant
    node_id: str  # who recorded it
    kind: str  # "JobStateChanged" | "ExecutionStateChanged" | "Note"
    message: str
    execution_id: str = ""
    previous: str = ""
    new: str = ""
    # Sorts by time; the whole event is the key, so merging is exact.
    order: tuple[float, int, str, str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.time, self.seq, self.node_id, self.execution_id, self.kind, self.message)
        object.__setattr__(self, "order", key)


@dataclass(frozen=True, slots=True)
class JobHeader:
    """The job-level fields of a record, as one leader wrote them."""

    id: str
    spec: JobSpec
    name: str
    state: JobState
    message: str
    version: int
    revision: int
    epoch: int
    leader: str
    successors: tuple[str, ...]
    create_time: float
    modify_time: float
    retries: int = 0
    submitter: str = ""  # the node it was submitted to: it keeps the record too
    salt: str = ""  # with the spec and submitter, what the job's ID certifies (`protocols.jobid`)
    # Which header wins a merge: an end is final; else the newest; the tail
    # breaks ties. Computed once: merges compare it often.
    order: tuple[int, int, int, str, float, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (_FINALITY.get(self.state, 0), self.epoch, self.revision, self.leader, self.modify_time, self.state._value_)
        object.__setattr__(self, "order", key)

    @property
    def keepers(self) -> frozenset[str]:
        """Who keeps the whole record and repairs it with the others."""
        return frozenset((self.leader, *self.successors, self.submitter)) - {""}

    def kept_by(self, node_id: str) -> bool:
        """`node_id in keepers`, without building the set (a hot path)."""
        return node_id == self.leader or node_id == self.submitter or node_id in self.successors


    @property
    def version_key(self) -> tuple[int, int, int]:
        """What anti-entropy compares: enough to tell which replica is newer."""
        return (_FINALITY.get(self.state, 0), self.epoch, self.revision)


@dataclass(frozen=True, slots=True)
class JobDelta:
    """One write to a job: its new header, changed executions, new events."""

    header: JobHeader
    executions: tuple[ExecutionRecord, ...] = ()
    events: tuple[HistoryEvent, ...] = ()


@dataclass(slots=True)
class JobReplica:
    """A node's copy of one job; mutable, merged from deltas."""

    header: JobHeader
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    history: list[HistoryEvent] = field(default_factory=list)
    _seen: set[tuple[float, int, str, str, str, str]] = field(default_factory=set, repr=False)
    _weight: int = field(default=0, repr=False)  # see fingerprint(); kept as executions merge
    asking: int = field(default=0, repr=False)  # executions in AskForBid: a bid round is open
    active: int = field(default=0, repr=False)  # executions holding resources on their nodes
    accepted: int = field(default=0, repr=False)  # executions in BidAccepted: told to start, not yet started
    # Indexes kept as executions merge, so the leader's per-event questions
    # (what ran on this node, how often did it fail) cost no scan of them all.
    by_node: dict[str, list[ExecutionRecord]] = field(default_factory=dict, repr=False)  # in arrival order
    failures: Counter[str] = field(default_factory=Counter, repr=False)  # Failed executions, by node
    faults: int = field(default=0, repr=False)  # Failed executions that failed by the job's own doing
    _active_on: dict[str, int] = field(default_factory=dict, repr=False)  # active executions, by node (none: absent)

    @classmethod
    def from_delta(cls, delta: JobDelta) -> JobReplica:
        replica = cls(delta.header)
        replica.apply(delta)
        return replica

    @property
    def id(self) -> str:
        return self.header.id

    def has_event(self, order: tuple[float, int, str, str, str, str]) -> bool:
        """Whether the history holds the event of this `HistoryEvent.order`."""
        return order in self._seen

    def apply(self, delta: JobDelta) -> bool:
        """Merge a delta in; return True when anything changed."""
        changed = False
        if delta.header is not self.header and delta.header.order > self.header.order:
            self.header = delta.header
            changed = True
        executions = self.executions
        for execution in delta.executions:
            held = executions.get(execution.id)
            if held is execution:
                continue  # records travel by reference in one process: nothing to compare
            if held is None or execution.order > held.order:
                executions[execution.id] = execution
                self._index(execution, held)
                changed = True
        events = delta.events
        if not events:
            return changed
        history = self.history
        if len(events) <= len(history) and all(map(operator.is_, events, history[-len(events) :])):
            return changed  # the tail of the history we hold (the same objects: one process)
        seen = self._seen
        fresh = [event for event in events if event.order not in seen]
        if fresh and len(history) >= HISTORY_LIMIT:
            # Full: an event older than all we keep would be cut at once, and
            # is no news (it is not in `seen` only because it was cut before:
            # counting it as a change made two replicas teach each other it
            # forever).
            oldest = history[0].order
            fresh = [event for event in fresh if event.order > oldest]
        if fresh:
            if len(fresh) > 1:
                fresh.sort(key=_event_order)
            seen.update(map(_event_order, fresh))
            in_order = not history or history[-1].order <= fresh[0].order
            history.extend(fresh)
            if not in_order:  # a late delta: rare, and the list is short
                history.sort(key=_event_order)
            if len(history) > HISTORY_LIMIT:
                for dropped in history[:-HISTORY_LIMIT]:
                    seen.discard(dropped.order)
                del history[:-HISTORY_LIMIT]
            changed = True
        return changed

    def _index(self, execution: ExecutionRecord, held: ExecutionRecord | None) -> None:
        """Keep the indexes and counts as `execution` takes the place of
        `held` (None: it is new here)."""
        node_id = execution.node_id
        on_node = self.by_node.get(node_id)
        if on_node is None:
            on_node = self.by_node[node_id] = []
        asking, active, accepted, failed = _COUNTED[execution.state]
        weight = execution.weight
        if held is None:
            on_node.append(execution)
            was_failed = 0
            weight += 1
        else:
            on_node[on_node.index(held)] = execution  # a node holds few executions of one job
            was_asking, was_active, was_accepted, was_failed = _COUNTED[held.state]
            asking -= was_asking
            active -= was_active
            accepted -= was_accepted
            weight -= held.weight
        if failed != was_failed:
            self.failures[node_id] += failed - was_failed
        self.faults += (failed and _own_fault(execution)) - (was_failed and _own_fault(held))
        if active:
            left = self._active_on.get(node_id, 0) + active
            if left:
                self._active_on[node_id] = left
            else:
                del self._active_on[node_id]
        self._weight += weight
        self.asking += asking
        self.active += active
        self.accepted += accepted

    def on_node(self, node_id: str) -> list[ExecutionRecord]:
        """The job's executions on `node_id`, in the order they arrived here."""
        return self.by_node.get(node_id, [])

    def holders(self) -> set[str]:
        """Who receives the job's writes: its keepers, and the nodes whose
        executions of it hold resources (they obey the record)."""
        header = self.header
        holders = {header.leader, *header.successors, header.submitter}
        holders.discard("")  # (as `JobHeader.keepers`, without building it)
        holders.update(self._active_on)
        return holders

    def fingerprint(self) -> int:
        """A number that grows with every execution write this replica has
        merged: two replicas whose headers agree but whose executions differ
        (each side of a healed partition wrote some) show different numbers.
        Cut to 63 bits, as it goes on the wire: a big job's sum may wrap, and
        then only "equal" still means "the same" (digests swap both ways)."""
        return self._weight & _FINGERPRINT_BITS

    def snapshot(self) -> JobDelta:
        """The whole record as one delta: what repair sends."""
        return JobDelta(self.header, tuple(self.executions.values()), tuple(self.history))


def _own_fault(execution: ExecutionRecord | None) -> bool:
    return execution is not None and execution.result is not None and execution.result.job_fault


_event_order = operator.attrgetter("order")

# What an execution in each state counts for in its replica (0 or 1 each):
# (asking, active, accepted, failed); a table, as a merge asks per execution.
_COUNTED: dict[ExecutionState, tuple[int, int, int, int]] = {
    state: (
        int(state == ExecutionState.ASK_FOR_BID),
        int(state.active),
        int(state == ExecutionState.BID_ACCEPTED),
        int(state == ExecutionState.FAILED),
    )
    for state in ExecutionState
}


quick_init_module(globals())
