"""The node state machine, driven through its edge cases in virtual time."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from protocols import election
from protocols.events import FetchJob, ProbeVerdict, Received, Send, SendFailed, SetTimer, StopExecution, SubmitJob, TimerFired
from protocols.timers import TimerKey, TimerKind
from protocols.jobspec import JobSpec, job_spec_from_data
from protocols.leader import SUCCESSORS
from protocols.membership import MemberStatus
from protocols.messages import (
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    Capacity,
    DigestReply,
    DigestRequest,
    ExecutionUpdate,
    JobUpdated,
    RecordRequest,
    Records,
    RoomFreed,
    SubmitToLeader,
)
from protocols.node import FETCH_FROM, NodeConfig
from protocols.records import DesiredState, ExecutionResult, ExecutionState, JobDelta, JobHeader, JobState
from protocols.selection import SelectionPolicy
from tests.cluster import Cluster, Run

T = TypeVar("T")
SMALL = Capacity(cpu=2000, memory=2 << 30, disk=10 << 30)


def spec(job_type: str = "batch", count: int | None = 1, **task: Any) -> JobSpec:
    top = {key: task.pop(key) for key in ("Constraints", "Priority", "Meta") if key in task}
    document: dict[str, Any] = {
        **top,
        "Type": job_type,
        "Tasks": [
            {
                "Engine": {
                    "Type": "wasm",
                    "Params": {"EntryModule": {"Target": "/m.wasm", "Source": {"Type": "inline", "Params": {"URL": "data:,x"}}}},
                },
                "Resources": task.pop("Resources", {"CPU": "500m", "Memory": "256Mb"}),
                **task,
            }
        ],
    }
    if count is not None:
        document["Count"] = count
    return job_spec_from_data(document).spec


def configs(n: int, **overrides: Any) -> list[NodeConfig]:
    return [NodeConfig(node_id=f"n{i:02d}", capacity=SMALL, **overrides) for i in range(n)]


def settled(cluster: Cluster, until: float = 3.0) -> Cluster:
    cluster.run(until)  # a few heartbeats: everyone knows everyone
    return cluster


def one_service(nodes: int, job_id: str = "j", duration: float = 1000.0) -> tuple[Cluster, JobHeader]:
    """A settled cluster of `nodes` running service `job_id` (Count 1), 5 s in."""
    cluster = settled(Cluster(configs(nodes)))
    cluster.duration = lambda run, s: duration
    cluster.submit(0, job_id, spec("service", 1))
    cluster.run(5)
    return cluster, cluster.job(job_id).header


def sends(cluster: Cluster, kind: type[T]) -> list[tuple[str, T]]:
    """From now on, every message of `kind` any node sends, with its addressee."""
    sent: list[tuple[str, T]] = []
    apply = cluster._apply

    def recording(node_id: str, effects: list[Any]) -> None:
        sent.extend((e.peer, e.message) for e in effects if isinstance(e, Send) and isinstance(e.message, kind))
        apply(node_id, effects)

    cluster._apply = recording  # type: ignore[method-assign]
    return sent


def completed_partitions(cluster: Cluster, job_id: str) -> Counter[int]:
    job = cluster.job(job_id)
    return Counter(e.partition for e in job.executions.values() if e.state == ExecutionState.COMPLETED)


def test_batch_job_runs_each_partition_once_and_completes() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.submit(0, "j1", spec(count=3))
    cluster.run(20)
    job = cluster.job("j1")
    assert job.header.state == JobState.COMPLETED, job.header.message
    assert completed_partitions(cluster, "j1") == Counter({0: 1, 1: 1, 2: 1})
    asks = sum(1 for e in job.executions.values())
    assert asks <= 3 + 1  # Count plus a margin, not the whole network
    nodes = [e.node_id for e in job.executions.values() if e.state == ExecutionState.COMPLETED]
    assert len(set(nodes)) == 3
    keepers = cluster.keepers("j1")
    assert len(job.header.successors) == 2 and len(keepers) == len(job.header.keepers)  # and the leader, the submitter
    for other in keepers:  # every keeper converged on the same record
        assert cluster.job("j1", other).header.order == job.header.order


def test_history_records_every_transition_with_time_and_reason() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(1, "j1", spec())
    cluster.run(10)
    history = cluster.job("j1").history
    job_states = [e.new for e in history if e.kind == "JobStateChanged"]
    assert job_states == ["Pending", "Running", "Completed"]
    execution_states = [e.new for e in history if e.kind == "ExecutionStateChanged"]
    for state in ("AskForBid", "AskForBidAccepted", "BidAccepted", "Running", "Completed"):
        assert state in execution_states
    assert all(e.message for e in history)
    assert [e.time for e in history] == sorted(e.time for e in history)


def test_ops_job_runs_on_every_matching_node() -> None:
    labelled = [NodeConfig(node_id=f"n{i}", capacity=SMALL, labels={"service": "WebService"} if i % 2 else {}) for i in range(6)]
    cluster = settled(Cluster(labelled))
    cluster.submit(0, "ops", spec("ops", None, Constraints=[{"Key": "service", "Operator": "==", "Values": ["WebService"]}]))
    cluster.run(15)
    job = cluster.job("ops")
    assert job.header.state == JobState.COMPLETED, job.header.message
    ran = {e.node_id for e in job.executions.values() if e.state == ExecutionState.COMPLETED}
    assert ran == {"n1", "n3", "n5"}


def test_an_ops_run_that_failed_goes_again_on_its_node() -> None:
    cluster = settled(Cluster(configs(3)))
    failing = {"n01": 2}  # n01 fails twice, then succeeds

    def outcome(run: Run, s: JobSpec) -> bool:
        left = failing.get(run.node, 0)
        failing[run.node] = left - 1
        return left <= 0

    cluster.outcome = outcome
    cluster.submit(0, "ops", spec("ops", None))
    cluster.run(20)
    job = cluster.job("ops")
    assert job.header.state == JobState.COMPLETED, job.header.message
    on_n01 = sorted((e.create_time, e.state) for e in job.executions.values() if e.node_id == "n01")
    assert [state for _, state in on_n01] == [ExecutionState.FAILED, ExecutionState.FAILED, ExecutionState.COMPLETED]


def test_an_ops_job_fails_when_a_node_used_up_its_retries() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.outcome = lambda run, s: run.node != "n01"
    cluster.submit(0, "ops", spec("ops", None))
    cluster.run(30)
    job = cluster.job("ops")
    assert job.header.state == JobState.FAILED
    failures = [e for e in job.executions.values() if e.node_id == "n01" and e.state == ExecutionState.FAILED]
    assert len(failures) == 1 + NodeConfig(node_id="x").max_retries


def test_ops_job_with_no_matching_node_fails_saying_why() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "ops", spec("ops", None, Constraints=[{"Key": "service", "Operator": "=", "Values": ["none"]}]))
    cluster.run(5)
    job = cluster.job("ops")
    assert job.header.state == JobState.FAILED
    assert "constraint" in job.header.message


def test_daemon_runs_on_matching_nodes_including_ones_that_join_later() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "d", spec("daemon", None))
    cluster.duration = lambda run, s: 1e9  # daemons run until stopped
    cluster.run(8)
    assert {r.node for r in cluster.running("d")} == {"n00", "n01", "n02"}
    late = NodeConfig(node_id="n99", capacity=SMALL)
    cluster.configs.append(late)
    cluster._boot(late)
    cluster.run(20)
    assert {r.node for r in cluster.running("d")} == {"n00", "n01", "n02", "n99"}
    assert cluster.job("d").header.state == JobState.RUNNING
    cluster.stop(1, "d")
    cluster.run(25)
    assert cluster.job("d").header.state == JobState.STOPPED
    assert cluster.running("d") == []


def test_service_replica_moves_when_its_node_dies() -> None:
    cluster = settled(Cluster(configs(5)))
    cluster.duration = lambda run, s: 1e9
    cluster.submit(0, "svc", spec("service", 2))
    cluster.run(8)
    first = {r.node for r in cluster.running("svc")}
    assert len(first) == 2
    victim = sorted(first - {cluster.job("svc").header.leader})[0]
    cluster.crash(victim)
    cluster.run(40)
    now = {r.node for r in cluster.running("svc")}
    assert len(now) == 2 and victim not in now
    lost = [e for e in cluster.job("svc").executions.values() if e.node_id == victim]
    assert lost[0].state == ExecutionState.FAILED and "lost" in lost[0].message


def test_batch_without_a_fitting_node_fails_at_once_without_queue_timeout() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "big", spec(Resources={"CPU": "64", "Memory": "1Gb"}))
    cluster.run(5)
    job = cluster.job("big")
    assert job.header.state == JobState.FAILED
    assert "no suitable node" in job.header.message and "CPU" in job.header.message


def test_batch_queues_until_a_node_appears_then_runs() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "big", spec(Resources={"CPU": "8"}, Timeouts={"QueueTimeout": 60}))
    cluster.run(6)
    assert cluster.job("big").header.state == JobState.QUEUED
    big = NodeConfig(node_id="huge", capacity=Capacity(cpu=16000, memory=8 << 30, disk=10 << 30))
    cluster.configs.append(big)
    cluster._boot(big)
    cluster.run(30)
    job = cluster.job("big")
    assert job.header.state == JobState.COMPLETED, job.header.message
    assert [e.node_id for e in job.executions.values() if e.state == ExecutionState.COMPLETED] == ["huge"]


def test_queued_batch_fails_when_its_queue_timeout_passes() -> None:
    cluster = settled(Cluster(configs(2)))
    cluster.submit(0, "big", spec(Resources={"CPU": "8"}, Timeouts={"QueueTimeout": 10}))
    cluster.run(9)
    assert cluster.job("big").header.state == JobState.QUEUED
    cluster.run(20)
    job = cluster.job("big")
    assert job.header.state == JobState.FAILED and "QueueTimeout" in job.header.message


def test_priority_orders_what_waits() -> None:
    cluster = settled(Cluster(configs(1)))  # one leader holds all three in its queue
    for name, priority in (("low", 1), ("high", 9), ("mid", 5)):
        cluster.submit(0, name, spec(Resources={"CPU": "8"}, Timeouts={"QueueTimeout": 100}, Priority=priority))
    cluster.run(6)
    big = NodeConfig(node_id="huge", capacity=Capacity(cpu=8000, memory=8 << 30, disk=10 << 30))
    cluster.configs.append(big)
    cluster._boot(big)
    cluster.duration = lambda run, s: 5.0
    cluster.run(60)
    order = sorted((cluster.job(j).executions[e].create_time, j) for j in ("low", "high", "mid")
                   for e in cluster.job(j).executions if cluster.job(j).executions[e].state == ExecutionState.COMPLETED)
    assert [j for _, j in order] == ["high", "mid", "low"]


def test_total_timeout_is_the_jobs_own_verdict_and_not_retried() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.duration = lambda run, s: 100.0
    cluster.submit(0, "slow", spec(Timeouts={"TotalTimeout": 2}))
    cluster.run(60)
    job = cluster.job("slow")
    assert job.header.state == JobState.FAILED
    failed = [e for e in job.executions.values() if e.state == ExecutionState.FAILED]
    assert len(failed) == 1
    assert "TotalTimeout" in failed[0].message and "TotalTimeout" in job.header.message
    retry_notes = [e.message for e in job.history if e.kind == "Retry"]
    assert retry_notes == [f"the job's own failure ({failed[0].message}): not retried (set Meta p2pnode.retries to retry)"]


def test_a_job_that_asks_for_retries_gets_them_and_no_more() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.duration = lambda run, s: 100.0
    cluster.submit(0, "slow", spec(Timeouts={"TotalTimeout": 2}, Meta={"p2pnode.retries": "2"}))
    cluster.run(60)
    job = cluster.job("slow")
    assert job.header.state == JobState.FAILED
    failed = [e for e in job.executions.values() if e.state == ExecutionState.FAILED]
    assert len(failed) == 3  # the first try and the 2 retries it asked for
    notes = [e.message for e in sorted(job.history, key=lambda e: e.time) if e.kind == "Retry"]
    assert [n.split(": ", 1)[1] for n in notes] == ["retry 1 of the 2 it asks for", "retry 2 of the 2 it asks for",
                                                    "not retried, its 2 retries are used up"]


def test_a_failed_execution_is_retried_on_another_node() -> None:
    cluster = settled(Cluster(configs(4)))
    first_node: list[str] = []

    def outcome(run: Any, s: JobSpec) -> bool:
        if not first_node:
            first_node.append(run.node)
            return False
        return True

    cluster.outcome = outcome
    cluster.submit(0, "flaky", spec())
    cluster.run(20)
    job = cluster.job("flaky")
    assert job.header.state == JobState.COMPLETED
    (done,) = [e for e in job.executions.values() if e.state == ExecutionState.COMPLETED]
    assert done.node_id != first_node[0]
    assert job.header.retries == 1


def test_stop_cancels_every_execution() -> None:
    cluster = settled(Cluster(configs(4)))
    cluster.duration = lambda run, s: 1e9
    cluster.submit(0, "b", spec(count=3))
    cluster.run(6)
    assert len(cluster.running("b")) == 3
    cluster.stop(2, "b", "enough")
    cluster.run(10)
    job = cluster.job("b")
    assert job.header.state == JobState.STOPPED and job.header.message == "enough"
    assert cluster.running("b") == []
    assert all(e.state.terminal for e in job.executions.values())


def test_the_write_that_ends_a_job_mends_a_write_a_keeper_lost() -> None:
    cluster = settled(Cluster(configs(7, anti_entropy_interval=1000.0)))  # no repair but this
    cluster.duration = lambda run, s: 5.0
    job_id = "j"
    ranked = election.rank(job_id, [c.node_id for c in cluster.configs], k=1 + SUCCESSORS)
    leader, keeper = ranked[0], ranked[-1]
    lost: list[JobUpdated] = []
    apply = cluster._apply

    def losing(node_id: str, effects: list[Any]) -> None:
        # The first of the leader's writes to one keeper that carries
        # executions vanishes without a word (taken, then lost).
        def kept(effect: Any) -> bool:
            message = effect.message if isinstance(effect, Send) else None
            if lost or node_id != leader or not isinstance(message, JobUpdated) or effect.peer != keeper:
                return True
            if not message.delta.executions:
                return True
            lost.append(message)
            return False

        apply(node_id, [e for e in effects if kept(e)])

    cluster._apply = losing  # type: ignore[method-assign]
    cluster.submit(0, job_id, spec(count=2))
    cluster.run(30)
    assert lost and cluster.job(job_id).header.leader == leader
    index = next(i for i, c in enumerate(cluster.configs) if c.node_id == keeper)
    theirs, ours = cluster.job(job_id, index), cluster.job(job_id)
    assert ours.header.state == JobState.COMPLETED
    assert theirs.header.order == ours.header.order and theirs.executions == ours.executions


def test_a_dead_leaders_job_is_taken_over_and_completes() -> None:
    cluster = settled(Cluster(configs(5)))
    cluster.duration = lambda run, s: 6.0
    cluster.submit(0, "j", spec(count=2))
    cluster.run(4)
    leader = cluster.job("j").header.leader
    cluster.crash(leader)
    cluster.run(60)
    survivor = next(i for i, c in enumerate(cluster.configs) if c.node_id != leader)
    job = cluster.job("j", survivor)
    assert job.header.state == JobState.COMPLETED, job.header.message
    assert job.header.leader != leader and job.header.epoch == 2
    assert max(completed_partitions(cluster, "j").values()) == 1


def test_with_one_watcher_a_death_reaches_a_member_that_joined_later() -> None:
    # n00 watches n01 and holds the seq it first heard of it (a refresh is
    # not stored); n02 joined later and holds a newer one. n01 submits a job
    # it leads, with n02 next in line, and dies at once: n02 must believe
    # n00's Down and take over (integration: test_a_job_outlives_the_peer_...).
    # n01 first: its welcome, with its own current seq, reaches n02 first
    early = [NodeConfig(node_id=n, capacity=SMALL, watchers=1) for n in ("n01", "n00")]
    cluster = Cluster(early)
    cluster.run(10)
    late = NodeConfig(node_id="n02", capacity=SMALL, watchers=1)
    cluster.configs.append(late)
    cluster._boot(late)
    cluster.run(14)
    watcher, heir = (cluster.nodes[n].membership for n in ("n00", "n02"))
    assert watcher.watched() == ["n01"] and "n01" not in heir.watched()
    assert heir.info("n01").seq > watcher.info("n01").seq  # type: ignore[union-attr]
    ids = ["n00", "n01", "n02"]
    job_id = next(j for j in (f"j{i}" for i in range(100)) if election.rank(j, ids, k=2) == ["n01", "n02"])
    cluster.submit(0, job_id, spec())
    cluster.run(cluster.now + 0.05)
    cluster.crash("n01")
    died: dict[str, float] = {}
    while cluster.now < 60:
        cluster.run(cluster.now + 0.01)
        for name in ("n00", "n02"):
            if name not in died and not cluster.nodes[name].membership.is_alive("n01"):
                died[name] = cluster.now
    assert "n02" in died, "n02 never learnt that n01 died"
    assert died["n02"] - died["n00"] < 0.1  # the watcher's Down is believed at once
    job = cluster.job(job_id, 2)
    assert job.header.state == JobState.COMPLETED, job.header.message
    assert job.header.leader == "n02" and job.header.epoch == 2


def test_a_member_its_watcher_cannot_reach_stays_alive_through_helpers() -> None:
    cluster = settled(Cluster(configs(5)))
    watcher, member = "n00", "n01"
    assert member in cluster.nodes[watcher].membership.watched()
    cluster.cut = {frozenset((watcher, member))}  # only this link fails
    for second in range(4, 60, 2):
        cluster.run(second)
        assert {node.membership.status(member) for node in cluster.nodes.values()} == {MemberStatus.ALIVE}


def test_a_deposed_leader_steps_down_after_a_partition_heals() -> None:
    cluster = settled(Cluster(configs(5)))
    cluster.duration = lambda run, s: 30.0
    cluster.submit(0, "j", spec("service", 1))
    cluster.run(4)
    leader = cluster.job("j").header.leader
    others = [c.node_id for c in cluster.configs if c.node_id != leader]
    cluster.cut = {frozenset((leader, other)) for other in others}
    cluster.run(30)
    cluster.cut = set()
    cluster.run(80)
    index = next(i for i, c in enumerate(cluster.configs) if c.node_id == leader)
    views = {cluster.job("j", i).header.order for i in range(5)}
    assert len(views) == 1, views
    # Its epoch-1 leadership was overruled (it may lead again later, from a
    # newer epoch, if it held the other side dead when the partition healed).
    assert cluster.job("j", index).header.epoch >= 2
    assert len(cluster.running("j")) == 1  # no more than Count replicas once settled


def test_what_a_deposed_leaders_write_teaches_the_leader_reaches_every_keeper() -> None:
    cluster, header = one_service(8, duration=100.0)
    leader = cluster.nodes[header.leader]
    deposed = next(n for n in cluster.nodes if n != header.leader)
    # a write from the other side of a healed split: an epoch behind, with work we never saw
    stale = replace(header, epoch=header.epoch - 1, leader=deposed)
    effects = leader.handle(Received(deposed, JobUpdated(JobDelta(stale, (leader.new_execution(stale, deposed),)))), 6.0)
    told = {e.peer for e in effects if isinstance(e, Send) and isinstance(e.message, Records)}
    assert told >= header.keepers - {header.leader}


def test_a_lost_cancel_goes_again_while_its_node_is_alive() -> None:
    cluster = settled(Cluster(configs(4)))
    leader = cluster.node(0)
    cancel = CancelExecution("j", "e-1", 1, "surplus")
    effects = leader.handle(SendFailed("n01", cancel, "stream reset"), cluster.now)
    assert [e for e in effects if isinstance(e, Send)] == [Send("n01", cancel)]
    cluster.crash("n01")
    cluster.run(30)  # declared dead
    effects = cluster.node(0).handle(SendFailed("n01", cancel, "stream reset"), cluster.now)
    assert not [e for e in effects if isinstance(e, Send)]


def test_a_run_its_own_leader_gives_up_on_is_stopped_at_once() -> None:
    for attempt in range(40):  # a job whose replica runs on its leader
        job_id = f"j{attempt}"
        cluster, header = one_service(5, job_id)
        (run,) = cluster.running(job_id)
        if run.node == header.leader:
            break
    else:
        pytest.fail("no job ran on its leader")
    # it reports the run as another partition than it was placed as: the record gives the run up
    report = ExecutionUpdate(job_id, run.execution_id, header.epoch, ExecutionState.RUNNING, "running", partition=1)
    effects = cluster.nodes[run.node].handle(Received(run.node, report), cluster.now)
    assert cluster.nodes[run.node].jobs[job_id].executions[run.execution_id].state == ExecutionState.CANCELLED
    assert StopExecution(run.execution_id, "the job's record no longer wants this execution") in effects


def test_work_a_repair_brings_on_a_node_already_dead_is_failed() -> None:
    cluster, header = one_service(6)
    leader = cluster.nodes[header.leader]
    dead = next(n for n in cluster.nodes if n != header.leader and n not in {r.node for r in cluster.running("j")})
    cluster.crash(dead)
    cluster.run(30)  # the leader holds it dead
    # a keeper's repair shows a run there that the leader never heard of
    unheard = replace(leader.new_execution(header, dead), state=ExecutionState.RUNNING, partition=0, revision=2)
    keeper = next(n for n in header.keepers if n not in (header.leader, dead))
    leader.handle(Received(keeper, Records((JobDelta(header, (unheard,)),))), cluster.now)
    assert leader.jobs["j"].executions[unheard.id].state == ExecutionState.FAILED


def test_a_restarted_node_keeps_its_jobs() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "j", spec())
    cluster.run(10)
    cluster.crash("n00")
    cluster.restart("n00")
    cluster.run(15)
    assert cluster.job("j").header.state == JobState.COMPLETED
    assert cluster.node(0).membership.local.incarnation == 2


def test_a_declining_probe_keeps_the_node_out() -> None:
    probing = [NodeConfig(node_id=f"n{i}", capacity=SMALL, policy=SelectionPolicy(probe_exec="/bin/probe")) for i in range(3)]
    cluster = settled(Cluster(probing))
    cluster.probe = lambda node, execution: ProbeVerdict(node == "n2", "only n2 wants it")
    cluster.submit(0, "j", spec())
    cluster.run(20)
    job = cluster.job("j")
    assert job.header.state == JobState.COMPLETED
    assert [e.node_id for e in job.executions.values() if e.state == ExecutionState.COMPLETED] == ["n2"]


def test_a_probe_that_says_wait_holds_the_bid_until_answered() -> None:
    probing = [NodeConfig(node_id="n0", capacity=SMALL, policy=SelectionPolicy(probe_http="http://probe"))]
    cluster = settled(Cluster(probing, probe=lambda node, execution: ProbeVerdict(False, "later", wait=True)))
    cluster.submit(0, "j", spec(Timeouts={"QueueTimeout": 100}))
    cluster.run(5)
    asked = next(iter(cluster.job("j").executions.values()))
    assert asked.state == ExecutionState.ASK_FOR_BID or cluster.job("j").header.state == JobState.QUEUED


@pytest.mark.parametrize(
    "message",
    [
        BidReply("nope", "e-1", 1, True, "x"),
        ExecutionUpdate("nope", "e-1", 1, ExecutionState.COMPLETED),
        "not a message",
        None,
    ],
)
def test_messages_that_fit_nothing_are_ignored(message: object) -> None:
    cluster = settled(Cluster(configs(2)))
    effects = cluster.node(0).handle(Received("n01", message), cluster.now)
    assert effects == []


def test_a_peer_cannot_speak_for_another() -> None:
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "j", spec())
    cluster.run(10)
    job = cluster.job("j")
    forged = AskBid(job.header, "e-forged")
    assert cluster.node(1).handle(Received("n02", forged), cluster.now) == [] or job.header.leader == "n02"
    bogus = JobUpdated(job.snapshot())
    cluster.node(1).handle(Received("n02", bogus), cluster.now)
    assert cluster.job("j", 1).header.order == job.header.order


# ---------------------------------------------------------------- keepers


def _index(cluster: Cluster, node_id: str) -> int:
    return next(i for i, c in enumerate(cluster.configs) if c.node_id == node_id)


def test_a_job_is_kept_by_its_keepers_and_any_other_node_asks_them() -> None:
    cluster = settled(Cluster(configs(12)))
    cluster.submit(0, "j", spec())
    cluster.run(15)
    keepers = cluster.keepers("j")
    assert 0 in keepers and len(keepers) in (1 + SUCCESSORS, 2 + SUCCESSORS)  # leader, successors, submitter (maybe one of them)
    leader = cluster.job("j").header.leader
    done = cluster.job("j", _index(cluster, leader))
    assert done.header.state == JobState.COMPLETED
    outsider = next(i for i in range(12) if i not in keepers and "j" not in cluster.node(i).jobs)
    cluster.inject(outsider, FetchJob("j"))
    cluster.run(16)
    fetched = cluster.job("j", outsider)
    assert fetched.header.order == done.header.order
    assert fetched.fingerprint() == done.fingerprint() and fetched.history == done.history


def test_a_node_that_only_holds_a_copy_answers_with_the_header_that_names_the_keepers() -> None:
    cluster = settled(Cluster(configs(12)))
    cluster.duration = lambda run, s: 1000.0
    cluster.submit(0, "j", spec("ops", None))  # on every node, so on some that do not keep it
    cluster.run(10)
    header = cluster.job("j").header
    runner = next(e.node_id for e in cluster.job("j").executions.values() if e.state == ExecutionState.RUNNING
                  and not header.kept_by(e.node_id))
    node = cluster.node(_index(cluster, runner))
    answers = [e.message for e in node.handle(Received("n19", RecordRequest("j")), cluster.now) if isinstance(e, Send)]
    assert answers == [Records((JobDelta(node.jobs["j"].header),))]
    assert answers[0].deltas[0].header.leader == header.leader and answers[0].deltas[0].header.successors == header.successors


def test_asking_after_an_unknown_job_changes_nothing() -> None:
    cluster = settled(Cluster(configs(8)))
    cluster.inject(3, FetchJob("no-such-job"))
    cluster.run(5)
    assert all("no-such-job" not in cluster.node(i).jobs for i in range(8))


def test_a_node_that_does_not_keep_a_job_can_stop_it() -> None:
    cluster = settled(Cluster(configs(12)))
    cluster.duration = lambda run, s: 100.0
    cluster.submit(0, "j", spec("service", 2))
    cluster.run(6)
    outsider = next(i for i in range(12) if i not in cluster.keepers("j") and "j" not in cluster.node(i).jobs)
    asked = sends(cluster, RecordRequest)
    cluster.stop(outsider, "j", "no longer needed")
    cluster.run(7)  # well before the stop would be retried
    assert cluster.job("j").header.state == JobState.STOPPED
    assert cluster.job("j", outsider).header.state == JobState.STOPPED  # the leader showed it the end
    assert cluster.running("j") == []
    assert len(asked) == FETCH_FROM  # one round of asking how the job stands, at the start
    cluster.run(20)
    assert len(asked) == FETCH_FROM and not cluster.node(outsider)._stops


def test_a_lost_keeper_is_replaced_and_catches_up_when_it_returns() -> None:
    cluster, header = one_service(12, duration=200.0)
    lost = header.successors[1]
    cluster.crash(lost)
    cluster.run(30)
    now = cluster.job("j", _index(cluster, header.leader)).header
    assert lost in now.successors  # still listed: it may come back
    newcomers = set(now.successors) - set(header.successors)
    assert len(newcomers) == 1
    newcomer = _index(cluster, newcomers.pop())
    assert cluster.job("j", newcomer).header.order == now.order  # it got the whole record
    assert cluster.job("j", newcomer).fingerprint() == cluster.job("j", _index(cluster, now.leader)).fingerprint()
    cluster.restart(lost)
    cluster.run(45)
    leader = cluster.job("j", _index(cluster, now.leader))
    back = cluster.job("j", _index(cluster, lost))
    assert back.header.order == leader.header.order and back.fingerprint() == leader.fingerprint()


def test_a_keeper_cut_off_while_a_job_ended_gets_its_record_long_after_it_ended() -> None:
    cluster = settled(Cluster(configs(7)))
    job_id = "j"
    ranked = election.rank(job_id, [c.node_id for c in cluster.configs], k=1 + SUCCESSORS)
    cut = next(n for n in reversed(ranked[1:]) if n != "n00")  # a successor, not the submitter
    cluster.cut = {frozenset((cut, c.node_id)) for c in cluster.configs if c.node_id != cut}
    cluster.submit(0, job_id, spec())
    cluster.run(20)
    assert cluster.job(job_id).header.state == JobState.COMPLETED and job_id not in cluster.node(_index(cluster, cut)).jobs
    heal = cluster.job(job_id).header.modify_time + cluster.configs[0].recent_window + 5
    lost: list[Any] = []
    apply = cluster._apply

    def losing(node_id: str, effects: list[Any]) -> None:
        # What the others send it of the job as it returns (the catch-up)
        # vanishes without a word.
        def kept(effect: Any) -> bool:
            if not isinstance(effect, Send) or effect.peer != cut or cluster.now >= heal + 10:
                return True
            message = effect.message
            deltas = getattr(message, "deltas", None) or (getattr(message, "delta", None),)
            if all(d is None or d.header.id != job_id for d in deltas):
                return True
            lost.append(message)
            return False

        apply(node_id, [e for e in effects if kept(e)])

    cluster.run(heal)  # it is back only once the job has left the digests of recent jobs
    cluster._apply = losing  # type: ignore[method-assign]
    cluster.cut = set()
    cluster.run(heal + 60)
    theirs, ours = cluster.node(_index(cluster, cut)).jobs.get(job_id), cluster.job(job_id)
    assert lost and theirs is not None
    assert theirs.header.order == ours.header.order and theirs.executions == ours.executions
    digests = sends(cluster, DigestRequest)  # and once all agree, the job leaves the digests
    cluster.run(heal + 120)
    assert not [d for _, d in digests if any(entry[0] == job_id for entry in d.digest)]


def test_a_takeover_keeps_the_lost_leader_as_a_keeper() -> None:
    cluster, header = one_service(10, duration=200.0)
    cluster.crash(header.leader)
    cluster.run(30)
    survivor = _index(cluster, header.successors[0])
    now = cluster.job("j", survivor).header
    assert now.leader == header.successors[0] and now.epoch == header.epoch + 1
    assert header.leader in now.successors
    assert sum(1 for s in now.successors if s not in cluster.down) >= SUCCESSORS


def test_a_bid_tells_the_leader_what_the_bidder_has_free() -> None:
    nodes = configs(3)
    nodes[2] = NodeConfig(node_id="n02", capacity=SMALL, engines=("docker",))  # j's leader; it cannot run wasm
    cluster = settled(Cluster(nodes))
    cluster.duration = lambda run, s: 100.0
    cluster.submit(0, "j", spec("service", 1, Resources={"CPU": "1500m", "Memory": "256Mb"}))
    cluster.run(5)
    job = cluster.job("j")
    leader = cluster.node(_index(cluster, job.header.leader)).leader
    runner = next(e.node_id for e in job.executions.values() if e.state == ExecutionState.RUNNING)
    assert job.header.leader == "n02" and runner != "n02"
    assert leader._free_hints[runner][0].cpu == 500  # 2 cores less the 1.5 it runs, before any heartbeat says so
    assert leader._free(runner).cpu == 500


def test_a_daemon_does_not_ask_again_a_node_that_said_no() -> None:
    probing = [NodeConfig(node_id=f"n{i}", capacity=SMALL, policy=SelectionPolicy(probe_exec="/bin/probe")) for i in range(4)]
    cluster = settled(Cluster(probing, probe=lambda node, execution: ProbeVerdict(node != "n3", "n3 wants none")))
    cluster.duration = lambda run, s: 1000.0
    cluster.submit(0, "d", spec("daemon", None))
    cluster.run(150)  # five times the decline memory
    asks = Counter(e.node_id for e in cluster.job("d").executions.values())
    assert asks["n3"] == 1
    assert len(cluster.running("d")) == 3


def test_a_full_node_says_when_it_has_room_and_is_asked_again_only_rarely_until_then() -> None:
    # Heartbeats rare, as in a large network: the leader learns a node is
    # full only from its declines, and that it has room from its notice.
    cluster = settled(Cluster(configs(3, max_heartbeats_per_second=0.01)))
    cluster.duration = lambda run, s: 10_000.0
    cluster.submit(0, "big", spec("daemon", None, Resources={"CPU": "1500m", "Memory": "64Mb"}))
    cluster.run(10)
    sent = sends(cluster, AskBid)
    cluster.submit(0, "d", spec("daemon", None, Resources={"CPU": "1", "Memory": "64Mb"}))
    cluster.run(160)
    job = cluster.job("d")
    asks = Counter(peer for peer, ask in sent if ask.header.id == "d")
    assert set(asks) == {"n00", "n01", "n02"} and not cluster.running("d")  # each node judges its own room
    assert all(count == 2 for count in asks.values()), asks  # at once, and after the 60 s back-off: no polling
    notices = sends(cluster, RoomFreed)
    cluster.stop(0, "big")
    cluster.run(165)
    assert len(cluster.running("d")) == 3  # room again: each node said so, and was asked at once
    assert sorted(peer for peer, notice in notices if notice.job_id == "d") == [job.header.leader] * 3


def test_room_is_offered_to_the_most_important_waiting_job_first_and_no_more_than_fits() -> None:
    cluster = settled(Cluster(configs(2, max_heartbeats_per_second=0.01)))
    cluster.duration = lambda run, s: 10_000.0
    cluster.submit(0, "big", spec("daemon", None, Resources={"CPU": "1500m", "Memory": "64Mb"}))
    cluster.run(10)
    for name, priority in (("low", 0), ("high", 90), ("mid", 50)):
        cluster.submit(0, name, spec("daemon", None, Resources={"CPU": "1500m", "Memory": "64Mb"}, Priority=priority))
    cluster.run(20)
    notices = sends(cluster, RoomFreed)
    cluster.stop(0, "big")
    cluster.run(21)
    # each node has room for one of the three: it tells the leader of "high" only
    assert sorted(notice.job_id for _, notice in notices) == ["high", "high"]


def test_a_node_that_only_runs_a_job_is_sent_its_own_executions() -> None:
    cluster = settled(Cluster(configs(10)))
    sent = sends(cluster, JobUpdated)
    cluster.submit(0, "ops", spec("ops", None))
    cluster.run(30)
    job = cluster.job("ops")
    assert job.header.state == JobState.COMPLETED and len(job.executions) == 10
    to_runners = [(peer, m.delta) for peer, m in sent if m.delta.header.id == "ops" and not job.header.kept_by(peer)]
    assert {peer for peer, _ in to_runners} == {f"n{i:02d}" for i in range(10)} - job.header.keepers
    for peer, delta in to_runners:
        assert {e.node_id for e in delta.executions} <= {peer} and not delta.events


def test_running_work_checks_in_after_the_membership_moves_and_rarely_otherwise() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.duration = lambda run, s: 10_000.0
    cluster.submit(0, "s", spec("service", 1))
    cluster.run(10)
    (run,) = cluster.running("s")
    sent = sends(cluster, ExecutionUpdate)
    cluster.run(450)  # fifteen check-in intervals of a calm network
    check_ins = [m for _, m in sent if m.message == "still running"]
    assert len(check_ins) == 4, check_ins  # the first three rounds (after starting), then one in ten (~390 s)
    job = cluster.job("s")
    bystander = next(n for n in cluster.nodes if n != run.node and not job.header.kept_by(n))
    cluster.crash(bystander)
    sent.clear()
    cluster.run(450 + 15 + 35)  # the death is noticed (~10 s), then one check-in interval
    check_ins = [(peer, m) for peer, m in sent if m.message == "still running"]
    assert check_ins == [(job.header.leader, check_ins[0][1])] and check_ins[0][1].execution_id == run.execution_id


def test_a_daemon_gives_up_a_node_where_it_keeps_failing_and_runs_on_the_rest() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.duration = lambda run, s: 1.0 if run.node == "n05" else 10_000.0
    cluster.outcome = lambda run, s: run.node != "n05"
    cluster.submit(0, "d", spec("daemon", None))
    cluster.run(120)
    job = cluster.job("d")
    assert job.header.state == JobState.RUNNING
    assert sorted(run.node for run in cluster.running("d")) == ["n00", "n01", "n02", "n03", "n04"]
    failed = [e for e in job.executions.values() if e.node_id == "n05" and e.state == ExecutionState.FAILED]
    assert len(failed) == 4  # the first try and 3 retries, then never again


def test_a_stop_finds_the_keepers_after_the_ranking_moved_on() -> None:
    cluster = settled(Cluster(configs(12)))
    cluster.duration = lambda run, s: 1000.0
    first = election.rank("j", [f"n{i:02d}" for i in range(12)])[:4]  # down when the job comes
    for node_id in first:
        cluster.crash(node_id)
    cluster.run(30)
    submitter = next(i for i in range(12) if f"n{i:02d}" not in first)
    cluster.submit(submitter, "j", spec())
    cluster.run(40)
    for node_id in first:  # back, on top of the ranking, and none of them keeps the job
        cluster.restart(node_id)
    cluster.run(60)
    assert not any(cluster.nodes[n].keeps(cluster.nodes[n].jobs["j"]) for n in first if "j" in cluster.nodes[n].jobs)
    cluster.stop(int(first[0][1:]), "j")
    cluster.run(90)
    assert cluster.job("j", submitter).header.state == JobState.STOPPED and not cluster.running("j")


def test_work_a_deposed_leader_started_after_the_job_ended_is_cancelled() -> None:
    cluster = settled(Cluster(configs(6)))
    cluster.outcome = lambda run, s: False
    cluster.submit(0, "j", spec())
    cluster.run(30)
    job = cluster.job("j")
    assert job.header.state == JobState.FAILED  # no completion: nothing marks the late run surplus
    ran = next(e for e in job.executions.values() if e.state == ExecutionState.FAILED)
    late = replace(ran, id="e-late", node_id="n05", state=ExecutionState.RUNNING, desired=DesiredState.RUNNING, revision=1)
    leader = int(job.header.leader[1:])
    keeper = job.header.successors[0]  # a keeper from the other side of a healed split relays it
    cluster.inject(leader, Received(keeper, Records((JobDelta(job.header, (late,)),))))
    cluster.run(60)
    for index in cluster.keepers("j"):
        record = cluster.job("j", index).executions["e-late"]
        assert record.state == ExecutionState.CANCELLED and record.desired == DesiredState.STOPPED
    assert cluster.job("j").header.state == JobState.FAILED


def test_a_runner_that_restarted_unseen_tells_the_leader_that_took_over() -> None:
    # The runner (not a keeper: its copy is not sent its progress) restarts
    # while cut off from the job's leader, so its report that the run died
    # with it fails; then that leader dies. Its successor knows the runner
    # only as alive (its new incarnation): only the report, sent again to
    # whoever leads now, ends the run.
    nodes = configs(20)
    nodes[5] = NodeConfig(node_id="n05", capacity=SMALL, labels={"role": "runner"})
    cluster = settled(Cluster(nodes))
    cluster.duration = lambda run, s: 1000.0
    cluster.submit(0, "j", spec(Constraints=[{"Key": "role", "Operator": "=", "Values": ["runner"]}]))
    cluster.run(5)
    job = cluster.job("j")
    leader = job.header.leader
    execution = next(e for e in job.executions.values() if e.state == ExecutionState.RUNNING)
    runner = execution.node_id
    assert runner != leader and not job.header.kept_by(runner)
    cluster.cut.add(frozenset({runner, leader}))
    cluster.crash(runner)
    cluster.restart(runner)
    cluster.run(8)
    cluster.crash(leader)
    cluster.run(40)
    survivor = cluster.keepers("j")[0]
    record = cluster.job("j", survivor)
    assert record.header.leader != leader
    ended = record.executions[execution.id]
    assert ended.state == ExecutionState.FAILED and ended.message == "the node restarted"


def test_a_run_reported_as_another_partition_than_placed_does_not_count_for_it() -> None:
    # As when a leader that took over placed a bid its predecessor had
    # already accepted, as another partition: the result is not this slot's.
    cluster = settled(Cluster(configs(3)))
    cluster.duration = lambda run, s: 100.0
    cluster.submit(0, "j", spec("batch", 2))
    cluster.run(6)
    leads = _index(cluster, cluster.job("j").header.leader)
    job = cluster.job("j", leads)
    placed = next(e for e in job.executions.values() if e.state == ExecutionState.RUNNING and e.partition == 0)
    result = ExecutionResult(0, "done\n")
    report = ExecutionUpdate("j", placed.id, job.header.epoch, ExecutionState.COMPLETED, "done", result, partition=1)
    cluster.inject(leads, Received(placed.node_id, report))
    cluster.run(7)
    job = cluster.job("j", leads)
    assert job.executions[placed.id].state == ExecutionState.CANCELLED
    assert job.executions[placed.id].message == "it ran as partition 1, not 0"
    assert not [e for e in job.executions.values() if e.state == ExecutionState.COMPLETED]
    assert any(e.partition == 0 and e.state.active for e in job.executions.values() if e.id != placed.id)


def test_a_member_that_missed_a_restart_hears_of_it_from_the_restarted_node() -> None:
    # Heartbeats minutes apart, as in a large network: only the restarted
    # node's answer to a ping for a dead member can tell n02 it is back.
    cluster = settled(Cluster(configs(4, max_heartbeats_per_second=0.01)))
    cluster.crash("n01")
    cluster.run(25)
    assert cluster.node(2).membership.status("n01") == MemberStatus.DEAD
    cluster.cut.add(frozenset({"n01", "n02"}))  # n02 misses the return
    cluster.restart("n01")
    cluster.run(27)
    cluster.cut.clear()
    assert cluster.node(2).membership.status("n01") == MemberStatus.DEAD
    cluster.run(40)
    assert cluster.node(2).membership.status("n01") == MemberStatus.ALIVE


def test_a_leader_back_from_away_learns_how_its_jobs_stand_before_it_leads_them() -> None:
    """A stopped process (SIGSTOP) wakes to stale hand-overs: meanwhile its
    submitter gave the job to the next node. It asks before it places anything."""
    cluster = settled(Cluster(configs(5)))
    ids = [c.node_id for c in cluster.configs]
    job_id = next(f"k{i}" for i in range(200) if election.rank(f"k{i}", ids, k=1)[0] == ids[1])
    submitter, leader = cluster.node(0), cluster.node(1)
    handover = next(e.message for e in submitter.handle(SubmitJob(job_id, spec()), cluster.now)
                    if isinstance(e, Send) and isinstance(e.message, SubmitToLeader))

    back = leader.handle(Received(submitter.node_id, handover), leader.now + 10)  # nothing handled for 10 s
    assert not [e for e in back if isinstance(e, Send) and isinstance(e.message, AskBid)]
    asked = {e.peer for e in back if isinstance(e, Send) and isinstance(e.message, RecordRequest) and e.message.job_id == job_id}
    assert submitter.node_id in asked

    # No one answered that the job moved on: once resumed, it leads the job.
    resumed = leader.handle(TimerFired(TimerKey(TimerKind.RESUME)), leader.now + 4)
    assert [e for e in resumed if isinstance(e, Send) and isinstance(e.message, AskBid)]


def test_a_job_that_ends_in_the_step_a_split_heals_keeps_one_completion_a_partition() -> None:
    # Seed 35: the other side's write brought a second completion of partition 0
    # and work on a node that died meanwhile; failing that work ended the job
    # (no retries) before the step came to cancel surplus.
    cluster = settled(Cluster(configs(6, max_retries=0)))
    cluster.duration = lambda run, s: 2.0 if run.partition == 0 else 1000.0
    cluster.submit(0, "j", spec(count=2))
    cluster.run(10)
    header = cluster.job("j").header
    assert completed_partitions(cluster, "j") == Counter({0: 1})
    busy = {e.node_id for e in cluster.job("j").executions.values()} | header.keepers
    other, dead = [c.node_id for c in cluster.configs if c.node_id not in busy][:2]
    cluster.crash(dead)
    cluster.run(30)
    leader = cluster.nodes[header.leader]
    assert not leader.is_alive(dead)
    stale = replace(header, epoch=header.epoch - 1, leader=other)
    done = ExecutionResult(exit_code=0, stdout="done\n")
    second = replace(leader.new_execution(stale, other), partition=0, state=ExecutionState.COMPLETED,
                     desired=DesiredState.STOPPED, revision=6, result=done)
    lost = replace(leader.new_execution(stale, dead), partition=1, state=ExecutionState.RUNNING,
                   desired=DesiredState.RUNNING, revision=4)
    leader.handle(Received(other, JobUpdated(JobDelta(stale, (second, lost)))), cluster.now)
    job = leader.jobs["j"]
    assert job.header.state == JobState.FAILED, job.header.message
    assert Counter(e.partition for e in job.executions.values() if e.state == ExecutionState.COMPLETED) == Counter({0: 1})


def test_a_repair_lost_on_its_way_to_a_live_node_goes_again_though_it_keeps_nothing() -> None:
    # Seed 52: the answer to a deposed leader's older copy was lost twice, and
    # that node, no keeper in the newer record, kept running work the newer
    # record had failed, until anti-entropy happened to pick it.
    cluster, header = one_service(8, duration=100.0)
    (run,) = cluster.running("j")
    leader = cluster.nodes[header.leader]
    deposed = next(n for n in sorted(cluster.nodes) if n not in header.keepers and n != run.node)
    repair = DigestReply((leader.jobs["j"].snapshot(),), (), ())
    effects = leader.handle(SendFailed(deposed, repair, "stream timed out"), cluster.now)
    (timer,) = [e for e in effects if isinstance(e, SetTimer) and e.key.kind == TimerKind.RESYNC]
    effects = leader.handle(TimerFired(timer.key), timer.at)
    again = [e.message for e in effects if isinstance(e, Send) and e.peer == deposed]
    assert [type(m) for m in again] == [Records] and again[0].deltas[0].header.id == "j"
