"""The four job types as policies: what each wants, when it is done, what it retries.

Theory of operation
-------------------
The leader (`protocols.leader`) schedules every job with one step; where job
types differ, it asks the job's policy (`policy_for(spec.type)`). Each
policy answers from explicit arguments, without I/O:

- *slots*: which partitions want an execution now (batch: each partition
  until it completed; service: Count replicas, always; ops and daemon: one
  per matching node, so as many as there are bids);
- *outcome*: whether the job is done (`Finish`), has work to place
  (`PLACE`), or only waits for what runs (`HOLD`);
- *surplus*: executions to cancel so the invariants hold after a healed
  split (two runs of one batch partition, service replicas over Count);
- *when nothing fits*: queue (batch with QueueTimeout), wait (daemon,
  service, work still running) or fail;
- *failures*: what is retried, and when the job fails instead.

| type    | slots                   | done when                          | nothing fits      | retries                         |
|---------|-------------------------|------------------------------------|-------------------|---------------------------------|
| batch   | Count partitions        | every partition completed          | queue, else fail  | job's `max_retries`, own faults as Meta asks |
| ops     | every matching node     | no run left; each node's last ended | fail              | on the same node, `max_retries` per node |
| daemon  | every matching node     | never                              | wait              | a node failing it too often is given up |
| service | Count replicas          | never                              | wait              | job's `max_retries`             |
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocols.jobspec import JobSpec, JobType
from protocols.lifecycle import EXECUTION_PROGRESS
from protocols.placement import summarise
from protocols.records import ExecutionRecord, ExecutionState, JobHeader, JobReplica, JobState

RETRIES_META = "p2pnode.retries"  # job Meta: times a batch or ops job is run again after failing by its own doing

PROGRESS = EXECUTION_PROGRESS  # how far an execution got; an update never moves it backwards
PLACED = PROGRESS[ExecutionState.BID_ACCEPTED]  # at or beyond: a leader chose its bid


def job_retries(spec: JobSpec) -> int:
    """How often the job asks to be run again after its own failure (0 unless its Meta says)."""
    try:
        return max(0, min(int(spec.meta.get(RETRIES_META, "0")), 100))
    except ValueError:
        return 0


def own_fault(execution: ExecutionRecord) -> bool:
    """The run failed by the job's own doing (exit code, trap, its limits): another node would too."""
    return execution.result is not None and execution.result.job_fault


@dataclass(frozen=True, slots=True)
class Finish:
    """The job ends in `state`, for `message`."""

    state: JobState
    message: str


class Step(enum.Enum):
    PLACE = "place"  # look for nodes for the open slots
    HOLD = "hold"  # nothing to place; wait for what runs to report


class NoFit(enum.Enum):
    """What a job does when no node fits now."""

    WAIT = "wait"  # look again later (and when nodes join)
    QUEUE = "queue"  # wait, up to its QueueTimeout
    WAIT_FOR_ANSWERS = "answers"  # some nodes have not answered yet: slow is not no
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """What follows failed work: the job's new retry count to write (None:
    unchanged), nodes to ask again, or the job's end."""

    retries: int | None = None
    again_on: tuple[str, ...] = ()
    finish: Finish | None = None


class JobPolicy:
    """What all types share; each type below overrides where it differs."""

    kind: JobType
    every_node = False  # asks every matching node, one execution each (full or not: it knows best)
    counts_lost = True  # a run lost with its node counts against the job's retries
    keeps_looking = False  # looks again as nodes join or free room (`RoomFreed`), and on no other progress
    until_restart = False  # a node that said no is asked again only once it restarted
    backoff_factor = 1  # stretches the back-off of a node that was full

    def open_slots(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[int]:
        """Partitions that want an execution now (ops and daemon: one 0 per bid)."""
        raise NotImplementedError

    def fills_slots(self) -> bool:
        """Whether a round can be decided once each open slot has a bid
        (ops and daemon jobs want every matching node's answer)."""
        return not self.every_node

    def outcome(self, spec: JobSpec, replica: JobReplica) -> Finish | Step:
        return Step.PLACE

    def surplus(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[ExecutionRecord]:
        return []

    def holds_node(self, execution: ExecutionRecord) -> bool:
        """An ended execution that keeps its node from being asked again."""
        return False

    def gives_up(self, failures: int, max_retries: int) -> bool:
        """Whether a node that failed the job `failures` times is no longer asked."""
        return False

    def redundant_completion(self, execution: ExecutionRecord, executions: Iterable[ExecutionRecord]) -> bool:
        """A completion that does not count: its slot completed already."""
        return False

    def when_none_fit(self, header: JobHeader, executions: list[ExecutionRecord], awaiting: Callable[[], bool]) -> NoFit:
        """`awaiting()`: some live node has not answered an ask yet."""
        return NoFit.WAIT_FOR_ANSWERS if awaiting() else NoFit.FAIL

    def after_failures(
        self,
        header: JobHeader,
        failed: list[ExecutionRecord],
        *,
        final: bool,
        counted: bool,
        max_retries: int,
        retry_on: Callable[[ExecutionRecord], bool],
    ) -> FailurePlan:
        """`final`: the job failed by its own doing more often than it asks
        to retry (see `fault_verdicts`); `counted`: the failures count
        against the job's retries; `retry_on`: a failed run may go again on
        its node."""
        if not counted:
            return FailurePlan()
        retries = header.retries + len(failed)
        if retries > max_retries:
            last = failed[-1]
            why = f"execution on {last.node_id} failed ({last.message}); {max_retries} retries used up"
            return FailurePlan(retries, finish=Finish(JobState.FAILED, why))
        return FailurePlan(retries)

    def judges_faults(self) -> bool:
        """Whether a failure of the job's own is weighed against the retries it asks for."""
        return False


class Batch(JobPolicy):
    """Count partitions, each run to completion once."""

    kind = JobType.BATCH

    def open_slots(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[int]:
        taken = {e.partition for e in executions if e.state.active or e.state == ExecutionState.COMPLETED}
        return [p for p in range(max(spec.count, 1)) if p not in taken]

    def outcome(self, spec: JobSpec, replica: JobReplica) -> Finish | Step:
        done = {e.partition for e in replica.executions.values() if e.state == ExecutionState.COMPLETED}
        if len(done) >= spec.count:
            return Finish(JobState.COMPLETED, f"all {spec.count} partition(s) completed")
        return Step.PLACE

    def surplus(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[ExecutionRecord]:
        # Both sides of a healed split may have completed a partition: the
        # record keeps one completion (the newest leader's).
        executions = list(executions)
        completed = sorted((e for e in executions if e.state == ExecutionState.COMPLETED), key=lambda e: (-e.epoch, e.id))
        keep: set[int] = set()
        surplus = []
        for execution in completed:
            if execution.partition in keep:
                surplus.append(execution)
            keep.add(execution.partition)
        return surplus + _over_count(spec, executions, keep)

    def redundant_completion(self, execution: ExecutionRecord, executions: Iterable[ExecutionRecord]) -> bool:
        return any(
            e.state == ExecutionState.COMPLETED and e.partition == execution.partition and e.id != execution.id
            for e in executions
        )

    def when_none_fit(self, header: JobHeader, executions: list[ExecutionRecord], awaiting: Callable[[], bool]) -> NoFit:
        if any(e.state.active for e in executions):
            return NoFit.WAIT  # the remaining partitions wait for the running ones' nodes
        if header.spec.task.timeouts.queue_timeout > 0:
            return NoFit.QUEUE
        return super().when_none_fit(header, executions, awaiting)

    def judges_faults(self) -> bool:
        return True

    def after_failures(
        self,
        header: JobHeader,
        failed: list[ExecutionRecord],
        *,
        final: bool,
        counted: bool,
        max_retries: int,
        retry_on: Callable[[ExecutionRecord], bool],
    ) -> FailurePlan:
        if final:
            last = next(e for e in reversed(failed) if own_fault(e))
            return FailurePlan(finish=Finish(JobState.FAILED, f"execution on {last.node_id} failed: {last.message}"))
        return super().after_failures(
            header, failed, final=final, counted=counted, max_retries=max_retries, retry_on=retry_on
        )


class Ops(JobPolicy):
    """Once on every matching node; done when every node's last run ended."""

    kind = JobType.OPS
    every_node = True

    def open_slots(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[int]:
        return [0] * sum(1 for e in executions if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED)

    def outcome(self, spec: JobSpec, replica: JobReplica) -> Finish | Step:
        """Asked once; then done when no node runs it: completed if each
        node's last run completed (a failed run is retried on its node)."""
        if not replica.executions:
            return Step.PLACE
        if replica.active:
            return Step.HOLD  # still running somewhere (counted as records merge: no scan per update)
        last: dict[str, ExecutionRecord] = {}
        for e in sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id)):
            if PROGRESS[e.state] >= PLACED and e.state != ExecutionState.BID_REJECTED:
                last[e.node_id] = e
        placed = list(last.values())
        if not placed:
            reasons = Counter(e.message for e in replica.executions.values())
            return Finish(JobState.FAILED, "no node took the job: " + summarise(reasons))
        if not all(e.state.terminal for e in placed):
            return Step.HOLD
        failed = [e for e in placed if e.state != ExecutionState.COMPLETED]
        if failed:
            return Finish(JobState.FAILED, f"{len(failed)} of {len(placed)} execution(s) failed: {failed[0].message}")
        return Finish(JobState.COMPLETED, f"completed on all {len(placed)} matching node(s)")

    def holds_node(self, execution: ExecutionRecord) -> bool:
        return True  # once per node: its failed runs go again through `after_failures`

    def when_none_fit(self, header: JobHeader, executions: list[ExecutionRecord], awaiting: Callable[[], bool]) -> NoFit:
        return NoFit.FAIL

    def judges_faults(self) -> bool:
        return True

    def after_failures(
        self,
        header: JobHeader,
        failed: list[ExecutionRecord],
        *,
        final: bool,
        counted: bool,
        max_retries: int,
        retry_on: Callable[[ExecutionRecord], bool],
    ) -> FailurePlan:
        # One per node: a run that failed goes again on its node, unless the
        # job failed by its own doing beyond what it asks to retry.
        again = {e.node_id for e in failed if retry_on(e) and not (final and own_fault(e))}
        return FailurePlan(again_on=tuple(sorted(again)))


class Daemon(JobPolicy):
    """On every matching node, now and as nodes join; never done by itself."""

    kind = JobType.DAEMON
    every_node = True
    counts_lost = False
    keeps_looking = True
    until_restart = True  # every matching node, every 30 s, would be thousands of asks
    backoff_factor = 6  # a full node tells a daemon's leader when it has room (`RoomFreed`)

    def open_slots(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[int]:
        return [0] * sum(1 for e in executions if e.state == ExecutionState.ASK_FOR_BID_ACCEPTED)

    def holds_node(self, execution: ExecutionRecord) -> bool:
        return execution.state == ExecutionState.COMPLETED

    def gives_up(self, failures: int, max_retries: int) -> bool:
        return failures > max_retries

    def when_none_fit(self, header: JobHeader, executions: list[ExecutionRecord], awaiting: Callable[[], bool]) -> NoFit:
        return NoFit.WAIT

    def after_failures(
        self,
        header: JobHeader,
        failed: list[ExecutionRecord],
        *,
        final: bool,
        counted: bool,
        max_retries: int,
        retry_on: Callable[[ExecutionRecord], bool],
    ) -> FailurePlan:
        return FailurePlan()  # a node that failed it too often is given up (`gives_up`), the rest carry on


class Service(JobPolicy):
    """Count replicas, kept running; never done by itself."""

    kind = JobType.SERVICE
    counts_lost = False

    def open_slots(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[int]:
        taken = {e.partition for e in executions if e.state.active}
        return [p for p in range(max(spec.count, 1)) if p not in taken]

    def surplus(self, spec: JobSpec, executions: Iterable[ExecutionRecord]) -> list[ExecutionRecord]:
        return _over_count(spec, executions, set())

    def when_none_fit(self, header: JobHeader, executions: list[ExecutionRecord], awaiting: Callable[[], bool]) -> NoFit:
        if executions or header.retries:
            return NoFit.WAIT  # it ran: its nodes may come back
        return super().when_none_fit(header, executions, awaiting)


def _over_count(spec: JobSpec, executions: Iterable[ExecutionRecord], keep: set[int]) -> list[ExecutionRecord]:
    """Active executions of a partition already kept, or outside 0..Count-1."""
    active = sorted((e for e in executions if e.state.active), key=lambda e: (e.create_time, e.id))
    surplus = []
    for execution in active:
        if execution.partition in keep or not 0 <= execution.partition < max(spec.count, 1):
            surplus.append(execution)
        else:
            keep.add(execution.partition)
    return surplus


POLICIES: dict[JobType, JobPolicy] = {policy.kind: policy for policy in (Batch(), Ops(), Daemon(), Service())}


def policy_for(spec: JobSpec) -> JobPolicy:
    return POLICIES[spec.type]
