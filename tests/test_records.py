"""The replicated record's merge: order does not matter, repeats do no harm,
and a newer epoch beats a busier deposed leader."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.jobspec import parse_job
from protocols.records import (
    HISTORY_LIMIT,
    DesiredState,
    ExecutionRecord,
    ExecutionState,
    HistoryEvent,
    JobDelta,
    JobHeader,
    JobReplica,
    JobState,
)

SPEC = parse_job(
    "Type: batch\nTasks:\n  - Engine:\n      Type: wasm\n      Params:\n        EntryModule:\n"
    "          Target: /m.wasm\n          Source:\n            Type: inline\n            Params:\n"
    "              URL: 'data:,x'\n"
).spec


def header(epoch: int, revision: int, leader: str = "a", state: JobState = JobState.RUNNING) -> JobHeader:
    return JobHeader("j", SPEC, "j", state, "", 1, revision, epoch, leader, (), 0.0, float(revision))


def execution(eid: str, epoch: int, revision: int, state: ExecutionState) -> ExecutionRecord:
    return ExecutionRecord(eid, "j", "n", 0, state, DesiredState.RUNNING, epoch, revision, 0.0, float(revision))


deltas = st.builds(
    lambda epoch, revision, leader, eid, erev, state, t: JobDelta(
        header(epoch, revision, leader),
        (execution(eid, epoch, erev, state),),
        (HistoryEvent(float(t), revision, leader, "Note", f"{eid}@{erev}"),),
    ),
    st.integers(1, 3),
    st.integers(1, 20),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["e1", "e2", "e3"]),
    st.integers(1, 20),
    st.sampled_from(list(ExecutionState)),
    st.integers(0, 50),
)


def state_of(replica: JobReplica) -> tuple[object, ...]:
    """What a replica holds, and its running counts checked against a recount."""
    executions = replica.executions.values()
    assert replica.asking == sum(e.state == ExecutionState.ASK_FOR_BID for e in executions)
    assert replica.active == sum(e.state.active for e in executions)
    assert replica.accepted == sum(e.state == ExecutionState.BID_ACCEPTED for e in executions)
    return (replica.header, sorted(replica.executions.items()), replica.history)


@settings(max_examples=200, deadline=None)
@given(st.lists(deltas, min_size=1, max_size=6))
def test_merge_does_not_depend_on_order(updates: list[JobDelta]) -> None:
    results = set()
    for order in itertools.islice(itertools.permutations(updates), 24):
        replica = JobReplica.from_delta(order[0])
        for delta in order[1:]:
            replica.apply(delta)
        results.add(repr(state_of(replica)))
    assert len(results) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(deltas, min_size=1, max_size=6))
def test_applying_twice_changes_nothing(updates: list[JobDelta]) -> None:
    replica = JobReplica.from_delta(updates[0])
    for delta in updates[1:]:
        replica.apply(delta)
    before = repr(state_of(replica))
    for delta in updates:
        assert not replica.apply(delta)
    assert repr(state_of(replica)) == before


def test_a_new_epoch_beats_a_higher_revision_of_a_deposed_leader() -> None:
    replica = JobReplica.from_delta(JobDelta(header(1, 50, "old"), (execution("e1", 1, 40, ExecutionState.RUNNING),)))
    replica.apply(JobDelta(header(2, 3, "new"), (execution("e1", 2, 1, ExecutionState.PUBLISHING),)))
    replica.apply(JobDelta(header(1, 51, "old"), (execution("e1", 1, 41, ExecutionState.RUNNING),)))
    assert replica.header.leader == "new"
    assert replica.executions["e1"].state == ExecutionState.PUBLISHING


def test_history_is_ordered_deduplicated_and_bounded() -> None:
    replica = JobReplica.from_delta(JobDelta(header(1, 1)))
    events = [HistoryEvent(float(t), t, "a", "Note", str(t)) for t in range(HISTORY_LIMIT + 50)]
    replica.apply(JobDelta(header(1, 2), (), tuple(reversed(events[:100]))))
    replica.apply(JobDelta(header(1, 3), (), tuple(events)))
    assert len(replica.history) == HISTORY_LIMIT
    assert [e.time for e in replica.history] == sorted(e.time for e in events)[-HISTORY_LIMIT:]
    assert not replica.apply(JobDelta(header(1, 3), (), (events[-1],)))


def test_events_older_than_a_full_history_are_no_news() -> None:
    # Else two replicas that cut different old events pass them back and
    # forth for ever, each merge "changing" the other.
    events = [HistoryEvent(float(t), t, "a", "Note", str(t)) for t in range(HISTORY_LIMIT + 50)]
    replica = JobReplica.from_delta(JobDelta(header(1, 1), (), tuple(events)))
    kept = list(replica.history)
    assert not replica.apply(JobDelta(header(1, 1), (), tuple(events[:50])))
    assert replica.history == kept


def test_snapshot_rebuilds_an_equal_replica() -> None:
    replica = JobReplica.from_delta(
        JobDelta(header(1, 4), (execution("e1", 1, 2, ExecutionState.RUNNING),),
                 (HistoryEvent(1.0, 1, "a", "Note", "x"),))
    )
    assert state_of(JobReplica.from_delta(replica.snapshot())) == state_of(replica)


def test_an_ended_job_stays_ended_whatever_a_stale_leader_writes_later() -> None:
    """A leader that restarted with state older than what it had published
    cannot take an end back."""
    replica = JobReplica.from_delta(JobDelta(header(1, 5, state=JobState.COMPLETED),
                                             (execution("e1", 1, 5, ExecutionState.COMPLETED),)))
    stale = JobDelta(header(1, 9, state=JobState.RUNNING), (execution("e1", 1, 9, ExecutionState.FAILED),))
    assert not replica.apply(stale)  # the same epoch cannot undo an end
    assert replica.header.state == JobState.COMPLETED
    assert replica.executions["e1"].state == ExecutionState.COMPLETED
    replica.apply(JobDelta(header(2, 1, "b", state=JobState.FAILED)))
    assert replica.header.state == JobState.COMPLETED  # the work was done


def test_a_completion_is_not_overruled_by_a_newer_leaders_guess_only_by_a_cancellation() -> None:
    # Seed 23: the other side of a split took the job over at epoch 2 and gave
    # its runs up for lost, while they completed at epoch 1 and the job ended
    # Completed; the healed record kept the Completed job with failed runs.
    replica = JobReplica.from_delta(JobDelta(header(1, 5), (execution("e", 1, 6, ExecutionState.COMPLETED),)))
    replica.apply(JobDelta(header(2, 7), (execution("e", 2, 5, ExecutionState.FAILED),)))
    assert replica.executions["e"].state == ExecutionState.COMPLETED
    replica.apply(JobDelta(header(3, 8), (execution("e", 3, 7, ExecutionState.CANCELLED),)))  # a second completion's
    assert replica.executions["e"].state == ExecutionState.CANCELLED
    replica.apply(JobDelta(header(4, 9), (execution("e", 4, 8, ExecutionState.FAILED),)))
    assert replica.executions["e"].state == ExecutionState.CANCELLED


def test_the_executors_record_of_a_run_beats_the_ask_a_restarted_leader_still_holds() -> None:
    # Burst seed 63: the leader decided the round, crashed before it saved
    # that, and restarted holding the ask (revision 1); the executor's own
    # record of the run it started (revision 0, same epoch) lost the merge,
    # the round closed as unanswered and the partition ran again elsewhere.
    ask = JobDelta(header(1, 2), (execution("e", 1, 1, ExecutionState.ASK_FOR_BID),))
    running = JobDelta(header(1, 1), (execution("e", 1, 0, ExecutionState.RUNNING),))
    for first, second in ((ask, running), (running, ask)):
        replica = JobReplica.from_delta(first)
        replica.apply(second)
        assert replica.executions["e"].state == ExecutionState.RUNNING
        assert replica.asking == 0 and replica.active == 1
    # An end is still final within its epoch, and a newer epoch still wins.
    replica = JobReplica.from_delta(running)
    replica.apply(JobDelta(header(1, 3), (execution("e", 1, 2, ExecutionState.ASK_FOR_BID_REJECTED),)))
    assert replica.executions["e"].state == ExecutionState.ASK_FOR_BID_REJECTED
    replica = JobReplica.from_delta(running)
    replica.apply(JobDelta(header(2, 3), (execution("e", 2, 1, ExecutionState.ASK_FOR_BID),)))
    assert replica.executions["e"].state == ExecutionState.ASK_FOR_BID


def test_a_big_jobs_fingerprint_fits_the_wire() -> None:
    done = tuple(execution(f"e{i}", 5, 9, ExecutionState.COMPLETED) for i in range(200))
    replica = JobReplica.from_delta(JobDelta(header(5, 9), done))
    assert 0 <= replica.fingerprint() < 1 << 63
