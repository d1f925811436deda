"""Each job type's policy: its slots, when it is done, what it does when nothing fits, what it retries."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocols.jobspec import JobSpec
from protocols.jobtypes import Batch, Daemon, Finish, FailurePlan, NoFit, Ops, Service, Step, job_retries, policy_for
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionResult,
    ExecutionState,
    JobDelta,
    JobHeader,
    JobReplica,
    JobState,
)
from tests.test_node import spec

S = ExecutionState


def run(node_id: str, state: ExecutionState, partition: int = 0, *, at: float = 1.0, epoch: int = 1,
        fault: bool = False, name: str = "") -> ExecutionRecord:
    return ExecutionRecord(
        id=name or f"e-{node_id}-{partition}-{state}-{at}", job_id="j", node_id=node_id, partition=partition,
        state=state, desired=DesiredState.RUNNING, epoch=epoch, revision=1, create_time=at, modify_time=at,
        message=f"{state} on {node_id}", result=ExecutionResult(job_fault=True) if fault else None,
    )


def header(job: JobSpec, **changes: Any) -> JobHeader:
    made = JobHeader(
        id="j", spec=job, name="j", state=JobState.RUNNING, message="", version=1, revision=1, epoch=1,
        leader="l", successors=(), create_time=0.0, modify_time=0.0,
    )
    return replace(made, **changes)


def replica(job: JobSpec, *executions: ExecutionRecord) -> JobReplica:
    return JobReplica.from_delta(JobDelta(header(job), executions))


def plan(job: JobSpec, failed: list[ExecutionRecord], *, final: bool = False, counted: bool = True,
         retries: int = 0) -> FailurePlan:
    return policy_for(job).after_failures(
        header(job, retries=retries), failed, final=final, counted=counted, max_retries=3, retry_on=lambda e: True
    )


def never() -> bool:
    return False


def test_each_type_has_its_policy() -> None:
    assert [type(policy_for(spec(t, None if t in ("ops", "daemon") else 1))) for t in ("batch", "ops", "daemon", "service")] == [
        Batch, Ops, Daemon, Service
    ]


def test_batch_slots_are_partitions_not_yet_completed_or_placed() -> None:
    job = spec("batch", 3)
    executions = [run("a", S.COMPLETED, 0), run("b", S.RUNNING, 1), run("c", S.FAILED, 2)]
    assert Batch().open_slots(job, executions) == [2]
    assert Batch().outcome(job, replica(job, *executions)) is Step.PLACE
    done = replica(job, run("a", S.COMPLETED, 0), run("b", S.COMPLETED, 1), run("c", S.COMPLETED, 2))
    assert Batch().outcome(job, done) == Finish(JobState.COMPLETED, "all 3 partition(s) completed")


def test_a_service_replica_that_completed_is_wanted_again() -> None:
    job = spec("service", 2)
    assert Service().open_slots(job, [run("a", S.COMPLETED, 0), run("b", S.RUNNING, 1)]) == [0]
    assert Service().outcome(job, replica(job, run("a", S.COMPLETED, 0))) is Step.PLACE


def test_ops_and_daemon_fill_one_slot_per_bid() -> None:
    bids = [run("a", S.ASK_FOR_BID_ACCEPTED), run("b", S.ASK_FOR_BID_ACCEPTED), run("c", S.ASK_FOR_BID_REJECTED)]
    assert Ops().open_slots(spec("ops", None), bids) == [0, 0]
    assert Daemon().open_slots(spec("daemon", None), bids) == [0, 0]
    assert not Ops().fills_slots() and not Daemon().fills_slots() and Batch().fills_slots()


def test_ops_is_done_when_every_nodes_last_run_ended() -> None:
    job = spec("ops", None)
    assert Ops().outcome(job, replica(job)) is Step.PLACE
    running = replica(job, run("a", S.COMPLETED, at=1), run("b", S.BID_ACCEPTED, at=1))
    assert Ops().outcome(job, running) is Step.HOLD
    retried = replica(job, run("a", S.COMPLETED, at=1), run("b", S.FAILED, at=1), run("b", S.COMPLETED, at=2))
    assert Ops().outcome(job, retried) == Finish(JobState.COMPLETED, "completed on all 2 matching node(s)")
    failed = replica(job, run("a", S.COMPLETED, at=1), run("b", S.COMPLETED, at=1), run("b", S.FAILED, at=2))
    assert Ops().outcome(job, failed) == Finish(JobState.FAILED, "1 of 2 execution(s) failed: Failed on b")
    declined = replica(job, run("a", S.ASK_FOR_BID_REJECTED))
    assert Ops().outcome(job, declined) == Finish(JobState.FAILED, "no node took the job: 1 node(s): AskForBidRejected on a")


def test_continuous_jobs_are_never_done_by_themselves() -> None:
    for kind in ("daemon", "service"):
        job = spec(kind, None if kind == "daemon" else 1)
        assert policy_for(job).outcome(job, replica(job, run("a", S.COMPLETED))) is Step.PLACE


def test_a_split_heals_to_one_completion_per_partition_and_count_replicas() -> None:
    job = spec("batch", 2)
    old, new = run("a", S.COMPLETED, 0, epoch=1), run("b", S.COMPLETED, 0, epoch=2)
    extra = run("c", S.RUNNING, 0, at=5.0)
    beyond = run("d", S.RUNNING, 7)
    assert Batch().surplus(job, [old, new, extra, beyond, run("e", S.RUNNING, 1)]) == [old, beyond, extra]
    service = spec("service", 1)
    first, second = run("a", S.RUNNING, 0, at=1.0), run("b", S.RUNNING, 0, at=2.0)
    assert Service().surplus(service, [second, first]) == [second]
    assert Ops().surplus(spec("ops", None), [first, second]) == []


def test_a_second_completion_of_a_batch_partition_does_not_count() -> None:
    job_runs = [run("a", S.COMPLETED, 0, name="e1"), run("b", S.RUNNING, 0, name="e2")]
    assert Batch().redundant_completion(job_runs[1], job_runs)
    assert not Batch().redundant_completion(job_runs[0], job_runs)
    assert not Service().redundant_completion(job_runs[1], job_runs)


def test_what_each_type_does_when_nothing_fits() -> None:
    batch, queued = spec("batch"), spec("batch", Timeouts={"QueueTimeout": 60})
    assert Batch().when_none_fit(header(batch), [], never) is NoFit.FAIL
    assert Batch().when_none_fit(header(batch), [], lambda: True) is NoFit.WAIT_FOR_ANSWERS
    assert Batch().when_none_fit(header(queued), [], never) is NoFit.QUEUE
    assert Batch().when_none_fit(header(batch), [run("a", S.RUNNING, 1)], never) is NoFit.WAIT
    assert Ops().when_none_fit(header(spec("ops", None)), [], lambda: True) is NoFit.FAIL
    assert Daemon().when_none_fit(header(spec("daemon", None)), [], never) is NoFit.WAIT
    service = spec("service")
    assert Service().when_none_fit(header(service), [], never) is NoFit.FAIL
    assert Service().when_none_fit(header(service, retries=1), [], never) is NoFit.WAIT
    assert Service().when_none_fit(header(service), [run("a", S.FAILED)], never) is NoFit.WAIT


def test_failures_count_against_the_jobs_retries_until_they_are_used_up() -> None:
    batch = spec("batch")
    lost = run("a", S.FAILED)
    assert plan(batch, [lost]) == FailurePlan(retries=1)
    ended = plan(batch, [lost], retries=3)
    assert ended.retries == 4 and ended.finish is not None and ended.finish.state == JobState.FAILED
    assert "3 retries used up" in ended.finish.message
    assert plan(spec("service"), [lost], counted=False) == FailurePlan()
    assert not Service().counts_lost and not Daemon().counts_lost and Batch().counts_lost


def test_a_batch_jobs_own_failure_beyond_what_it_asks_fails_it() -> None:
    own = run("a", S.FAILED, fault=True)
    verdict = plan(spec("batch"), [own], final=True)
    assert verdict.finish == Finish(JobState.FAILED, "execution on a failed: Failed on a")
    assert Batch().judges_faults() and Ops().judges_faults() and not Service().judges_faults()
    assert job_retries(spec("batch", Meta={"p2pnode.retries": "2"})) == 2
    assert job_retries(spec("batch", Meta={"p2pnode.retries": "many"})) == 0


def test_ops_retries_on_the_same_node_and_daemons_give_nodes_up() -> None:
    ops = spec("ops", None)
    failed = [run("b", S.FAILED), run("a", S.FAILED), run("c", S.FAILED, fault=True)]
    assert plan(ops, failed).again_on == ("a", "b", "c")
    assert plan(ops, failed, final=True).again_on == ("a", "b")  # the job's own failure, retries used up
    assert Ops().after_failures(header(ops), failed, final=False, counted=True, max_retries=3,
                                retry_on=lambda e: e.node_id != "a").again_on == ("b", "c")
    assert plan(spec("daemon", None), failed) == FailurePlan()
    assert Daemon().gives_up(4, 3) and not Daemon().gives_up(3, 3) and not Ops().gives_up(9, 3)
    assert Ops().holds_node(run("a", S.CANCELLED))
    assert Daemon().holds_node(run("a", S.COMPLETED)) and not Daemon().holds_node(run("a", S.FAILED))
