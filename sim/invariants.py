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
NO_JOB_LOST = "no job is lost: a live keeper holds every job, and every live keeper holds it terminal"
CONVERGED = "replicas converge: every live keeper of a job holds the same (epoch, revision) and executions of it"

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


def keepers_view(slots: Sequence[Slot], job_ids: Sequence[str]) -> dict[str, list[tuple[Slot, JobReplica | None]]]:
    """For each job, its live keepers (as its freshest live record names
    them) with what each holds (None: nothing). A job no live node holds has
    no entry. One pass over the nodes, so it is cheap at any size."""
    wanted = set(job_ids)
    newest: dict[str, JobReplica] = {}
    for slot in slots:
        for job_id, replica in slot.node.jobs.items():  # type: ignore[union-attr]
            if job_id in wanted:
                held = newest.get(job_id)
                if held is None or replica.header.order > held.header.order:
                    newest[job_id] = replica
    by_id = {slot.node_id: slot for slot in slots}
    view: dict[str, list[tuple[Slot, JobReplica | None]]] = {}
    for job_id, replica in newest.items():
        view[job_id] = [
            (slot, slot.node.jobs.get(job_id))  # type: ignore[union-attr]
            for keeper in sorted(replica.header.keepers)
            if (slot := by_id.get(keeper)) is not None
        ]
    return view


def newest(slots: Sequence[Slot], job_ids: Sequence[str]) -> dict[str, JobReplica]:
    """The freshest record of each job among the live nodes."""
    out: dict[str, JobReplica] = {}
    for job_id, held in keepers_view(slots, job_ids).items():
        replicas = [r for _, r in held if r is not None]
        if replicas:
            out[job_id] = max(replicas, key=lambda r: r.header.order)
    return out


def divergence(slots: Sequence[Slot], job_ids: Sequence[str], *, executions: bool = False) -> list[str]:
    """Jobs that some live keeper lacks, or holds at another header
    (epoch, revision) -- or, with `executions`, with another version of an
    execution -- and jobs no live keeper holds. Records are shared by
    reference in one process, so most comparisons are identity checks."""
    if not slots:
        return []
    view = keepers_view(slots, job_ids)
    diverged = {job_id for job_id in job_ids if job_id not in view}
    for job_id, held in view.items():
        replicas = [r for _, r in held]
        first = replicas[0] if replicas else None
        if first is None or any(r is None or not _same(first, r, executions) for r in replicas[1:]):
            diverged.add(job_id)
    return sorted(diverged)


def _same(ours: JobReplica, theirs: JobReplica, executions: bool) -> bool:
    a, b = ours.header, theirs.header
    if a is not b and (a.epoch, a.revision) != (b.epoch, b.revision):
        return False
    if not executions:
        return ours.fingerprint() == theirs.fingerprint()
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
        view = keepers_view(slots, diverged[:3])
        detail = []
        for job_id in diverged[:3]:
            held = Counter(_describe(r) for _, r in view.get(job_id, []))
            detail.append(f"{job_id}: {dict(held.most_common(4)) or 'held by no live node'}")
        raise InvariantViolation(seed, CONVERGED, f"{len(diverged)} job(s) differ; " + "; ".join(detail))


def check_nothing_lost(seed: int, slots: Sequence[Slot], job_ids: Sequence[str]) -> None:
    view = keepers_view(slots, job_ids)
    problems = [f"{job_id} held by no live node" for job_id in job_ids if job_id not in view]
    for job_id, held in view.items():
        if not any(r is not None for _, r in held):
            problems.append(f"{job_id} has no live keeper")
        for slot, replica in held:
            if replica is None:
                problems.append(f"{job_id} missing on its keeper {slot.node_id}")
            elif not replica.header.state.terminal:
                problems.append(f"{job_id} still {replica.header.state} on {slot.node_id}")
        if len(problems) > 20:
            break
    if problems:
        raise InvariantViolation(seed, NO_JOB_LOST, _first(problems))
