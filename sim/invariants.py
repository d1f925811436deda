"""The properties a run must keep, checked while it runs and at its end.

Each check raises `InvariantViolation` naming the seed (so the run can be
replayed exactly), the invariant, and the first few offenders.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from protocols.records import ExecutionState, JobReplica

from sim.world import Slot

NO_DOUBLE_COMPLETION = "no batch partition completes twice"
SERVICE_AT_MOST_COUNT = "at most Count service replicas run once the network settles"
BATCH_TERMINAL = "every batch/ops job reaches a terminal state once faults stop"
NO_JOB_LOST = "no job is lost: every live node holds every job, terminal"
CONVERGED = "replicas converge: every live node holds the same (epoch, revision) of every job"

ALL = (NO_DOUBLE_COMPLETION, SERVICE_AT_MOST_COUNT, BATCH_TERMINAL, NO_JOB_LOST, CONVERGED)


class InvariantViolation(AssertionError):
    def __init__(self, seed: int, invariant: str, detail: str) -> None:
        super().__init__(f"invariant violated with seed {seed}: {invariant}: {detail}")
        self.seed = seed
        self.invariant = invariant
        self.detail = detail


def _first(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def double_completions(replica: JobReplica) -> list[int]:
    """Partitions of a batch job with more than one Completed execution."""
    done = Counter(e.partition for e in replica.executions.values() if e.state == ExecutionState.COMPLETED)
    return sorted(p for p, n in done.items() if n > 1)


def check_no_double_completion(
    seed: int, replicas: Iterable[JobReplica], engine_completions: Mapping[tuple[str, int], list[str]]
) -> None:
    """In the record, and among the engine runs that finished and that the
    record accepted as Completed."""
    offenders = []
    for replica in replicas:
        if str(replica.header.spec.type) != "batch":
            continue
        for partition in double_completions(replica):
            offenders.append(f"{replica.id}#{partition} (record)")
        for partition in range(max(replica.header.spec.count, 1)):
            ran = engine_completions.get((replica.id, partition), ())
            accepted = [
                e for e in ran
                if (record := replica.executions.get(e)) is not None and record.state == ExecutionState.COMPLETED
            ]
            if len(accepted) > 1:
                offenders.append(f"{replica.id}#{partition} (engine: {len(accepted)} accepted completions)")
    if offenders:
        raise InvariantViolation(seed, NO_DOUBLE_COMPLETION, _first(offenders))


def service_replicas(slots: Iterable[Slot], service_ids: set[str]) -> Counter[str]:
    """Service executions the engines are running now, by job."""
    running: Counter[str] = Counter()
    for slot in slots:
        if slot.up:
            for run in slot.runs.values():
                if run.job_id in service_ids and not run.stopped:
                    running[run.job_id] += 1
    return running


def check_service_count(seed: int, running: Counter[str], counts: Mapping[str, int]) -> None:
    over = [f"{job} runs {n} > Count {counts[job]}" for job, n in sorted(running.items()) if n > counts[job]]
    if over:
        raise InvariantViolation(seed, SERVICE_AT_MOST_COUNT, _first(over))


def check_terminal(seed: int, unfinished: Mapping[str, JobReplica | None], now: float) -> None:
    """`unfinished`: the batch/ops jobs not terminal, with their leader's replica."""
    if unfinished:
        listed = [f"{job_id} ({_describe(unfinished[job_id])})" for job_id in sorted(unfinished)]
        raise InvariantViolation(seed, BATCH_TERMINAL, f"not terminal at t={now:.1f}s: {_first(listed, 3)}")


def divergence(slots: Sequence[Slot], job_ids: Sequence[str], *, executions: bool = False) -> list[str]:
    """Jobs that some live node lacks, or holds at another header
    (epoch, revision) -- or, with `executions`, with another version of an
    execution. Records are shared by reference in one process, so most
    comparisons are identity checks."""
    if not slots:
        return []
    reference = slots[0].node.jobs  # type: ignore[union-attr]
    expected: dict[str, JobReplica] = {}
    diverged: set[str] = set()
    for job_id in job_ids:
        replica = reference.get(job_id)
        if replica is None:
            diverged.add(job_id)
        else:
            expected[job_id] = replica
    for slot in slots[1:]:
        jobs = slot.node.jobs  # type: ignore[union-attr]
        for job_id, ours in expected.items():
            theirs = jobs.get(job_id)
            if theirs is None or not _same(ours, theirs, executions):
                diverged.add(job_id)
    return sorted(diverged)


def _same(ours: JobReplica, theirs: JobReplica, executions: bool) -> bool:
    a, b = ours.header, theirs.header
    if a is not b and (a.epoch, a.revision) != (b.epoch, b.revision):
        return False
    if not executions:
        return True
    if len(ours.executions) != len(theirs.executions):
        return False
    held = theirs.executions
    for execution_id, execution in ours.executions.items():
        other = held.get(execution_id)
        if other is not execution and (other is None or other.order != execution.order):
            return False
    return True


def _describe(replica: JobReplica | None) -> str:
    if replica is None:
        return "missing"
    header = replica.header
    states = Counter(str(e.state) for e in replica.executions.values())
    return f"e{header.epoch}r{header.revision}/{header.state} [{', '.join(f'{n} {s}' for s, n in sorted(states.items()))}]"


def check_converged(seed: int, slots: Sequence[Slot], job_ids: Sequence[str]) -> None:
    diverged = divergence(slots, job_ids)
    if diverged:
        detail = []
        for job_id in diverged[:3]:
            held = Counter(_describe(s.node.jobs.get(job_id)) for s in slots)  # type: ignore[union-attr]
            detail.append(f"{job_id}: {dict(held.most_common(4))}")
        raise InvariantViolation(seed, CONVERGED, f"{len(diverged)} job(s) differ; " + "; ".join(detail))


def check_nothing_lost(seed: int, slots: Sequence[Slot], job_ids: Sequence[str]) -> None:
    problems = []
    for slot in slots:
        jobs = slot.node.jobs  # type: ignore[union-attr]
        for job_id in job_ids:
            replica = jobs.get(job_id)
            if replica is None:
                problems.append(f"{job_id} missing on {slot.node_id}")
            elif not replica.header.state.terminal:
                problems.append(f"{job_id} still {replica.header.state} on {slot.node_id}")
        if len(problems) > 20:
            break
    if problems:
        raise InvariantViolation(seed, NO_JOB_LOST, _first(problems))
