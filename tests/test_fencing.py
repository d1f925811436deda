"""Fencing (issue 14, item 4): work is placed once per leader change at most.

An executor starts nothing on a decision of a leader deposed since it asked; a
node that takes a job over first learns what the lost leader placed; a
submitter whose leader is alive but did not answer says it again rather than
give the job a second leader."""

from __future__ import annotations

from dataclasses import replace

from protocols import election
from protocols.events import ProbeAnswered, ProbeVerdict, Received, Send, SendFailed, StartExecution, SubmitJob
from protocols.messages import AskBid, BidDecision, BidReply, JobUpdated, RecordRequest, Records, SubmitToLeader
from protocols.node import Node
from protocols.records import DesiredState, ExecutionState, JobDelta, JobState
from tests.cluster import Cluster
from tests.test_held_bids import held_cluster, the_hold
from tests.test_node import configs, sends, settled, spec


def _job_led_by(ids: list[str], leader: str, prefix: str = "j") -> str:
    return next(f"{prefix}{i}" for i in range(1000) if election.rank(f"{prefix}{i}", ids, k=1)[0] == leader)


def _asked_by_the_first_leader() -> tuple[SubmitToLeader, str, Node, float]:
    """A job n00 submitted, led by n01, and an executor (neither its leader,
    successor nor submitter) that bid on n01's ask: (the hand-over, the heir,
    the executor, now)."""
    cluster = settled(Cluster(configs(5)))
    ids = [c.node_id for c in cluster.configs]
    job_id = _job_led_by(ids, "n01")
    handover = next(e.message for e in cluster.node(0).handle(SubmitJob(job_id, spec()), cluster.now)
                    if isinstance(e, Send) and isinstance(e.message, SubmitToLeader))
    old = handover.delta.header
    heir = old.successors[0]
    executor = cluster.nodes[next(n for n in ids if n not in (old.leader, heir, old.submitter))]
    bid = executor.handle(Received(old.leader, AskBid(old, "e-old")), cluster.now)
    assert [e for e in bid if isinstance(e, Send) and isinstance(e.message, BidReply) and e.message.bid]
    return handover, heir, executor, cluster.now


def test_an_executor_starts_nothing_on_a_decision_of_a_leader_deposed_since_it_asked() -> None:
    handover, heir, executor, now = _asked_by_the_first_leader()
    old = handover.delta.header
    # The successor took over and asks again (the executor's copy still says epoch 1).
    new = replace(old, epoch=old.epoch + 1, leader=heir, revision=old.revision + 1)
    executor.handle(Received(heir, AskBid(new, "e-new")), now + 0.1)

    stale = BidDecision(old.id, "e-old", old.epoch, True, "bid accepted", 0)
    assert not [e for e in executor.handle(Received(old.leader, stale), now + 0.2) if isinstance(e, StartExecution)]
    current = BidDecision(old.id, "e-new", new.epoch, True, "bid accepted", 0)
    started = [e for e in executor.handle(Received(heir, current), now + 0.3) if isinstance(e, StartExecution)]
    assert [e.execution.id for e in started] == ["e-new"]


def test_a_decision_older_than_the_record_the_executor_holds_starts_nothing() -> None:
    handover, heir, executor, now = _asked_by_the_first_leader()
    old = handover.delta.header
    # The new leader's write reaches the executor's copy before the old decision does.
    new = replace(old, epoch=old.epoch + 1, leader=heir, revision=old.revision + 1)
    executor.handle(Received(heir, JobUpdated(replace(handover.delta, header=new))), now + 0.1)
    assert executor.jobs[old.id].header.epoch == new.epoch

    stale = BidDecision(old.id, "e-old", old.epoch, True, "bid accepted", 0)
    assert not [e for e in executor.handle(Received(old.leader, stale), now + 0.2) if isinstance(e, StartExecution)]


def test_a_submitter_whose_live_leader_did_not_answer_hands_it_again_and_places_it_once() -> None:
    # The leader got the job, but its answer was too late: the stream timed out.
    cluster = settled(Cluster(configs(5)))
    cluster.duration = lambda run, s: 5.0
    ids = [c.node_id for c in cluster.configs]
    job_id = _job_led_by(ids, "n01")
    cluster.submit(0, job_id, spec())
    cluster.run(cluster.now + 0.005)  # the submit is handled, its hand-over on its way
    handover = SubmitToLeader(cluster.job(job_id).snapshot())
    cluster.inject(0, SendFailed("n01", handover, "timed out"))
    cluster.run(60)

    for node in cluster.nodes.values():
        if job_id not in node.jobs:
            continue
        header = node.jobs[job_id].header
        assert (header.epoch, header.leader) == (1, "n01"), node.node_id
    job = cluster.job(job_id, 1)
    assert job.header.state == JobState.COMPLETED, job.header.message
    assert len([r for r in cluster.runs.values() if r.job_id == job_id]) == 1


def test_a_submitter_hands_a_job_on_once_its_leader_is_lost() -> None:
    cluster = settled(Cluster(configs(5)))
    ids = [c.node_id for c in cluster.configs]
    job_id = _job_led_by(ids, "n01")
    cluster.crash("n01")
    cluster.submit(0, job_id, spec())
    cluster.run(60)
    job = cluster.job(job_id)
    assert job.header.leader != "n01" and job.header.state == JobState.COMPLETED, job.header.message


def _placed_behind_the_heirs_back() -> tuple[Cluster, str, str, str, str]:
    """A job running on a node other than its leader and first successor,
    whose writes did not reach that successor (their link is cut): (cluster,
    job, leader, heir, execution)."""
    nodes = configs(6, anti_entropy_interval=1000.0)  # no repair by chance meanwhile
    nodes[5] = replace(nodes[5], labels={"role": "runner"})
    ids = [c.node_id for c in nodes]
    job_id = next(f"t{i}" for i in range(1000) if not {"n00", "n05"} & set(election.rank(f"t{i}", ids, k=2)))
    leader, heir = election.rank(job_id, ids, k=2)
    cluster = settled(Cluster(nodes))
    cluster.duration = lambda run, s: 1000.0
    cluster.cut = {frozenset((leader, heir))}
    cluster.submit(0, job_id, spec(Constraints=[{"Key": "role", "Operator": "=", "Values": ["runner"]}]))
    cluster.run(cluster.now + 1.0)
    (run,) = cluster.running(job_id)
    return cluster, job_id, leader, heir, run.execution_id


def test_a_node_that_takes_a_job_over_first_learns_what_the_lost_leader_placed() -> None:
    # The lost leader's write placing the job reached the other keepers, not
    # its first successor: the successor asks them before it places anything.
    cluster, job_id, leader, heir, execution_id = _placed_behind_the_heirs_back()
    assert not cluster.nodes[heir].jobs[job_id].executions  # the heir missed the placement
    asked: list[object] = []
    apply = cluster._apply

    def recording(node_id: str, effects: list) -> None:
        if node_id == heir:
            asked.extend(e.message for e in effects if isinstance(e, Send) and isinstance(e.message, (RecordRequest, AskBid)))
        apply(node_id, effects)

    cluster._apply = recording  # type: ignore[method-assign]
    cluster.crash(leader)
    cluster.cut = set()
    cluster.run(60)

    assert asked and isinstance(asked[0], RecordRequest), asked
    job = cluster.job(job_id, 0)
    assert job.header.leader == heir and job.header.epoch == 2
    assert [r.execution_id for r in cluster.runs.values() if r.job_id == job_id] == [execution_id]
    assert job.executions[execution_id].state == ExecutionState.RUNNING


def test_a_leader_does_not_give_up_a_run_whose_acceptance_timed_out_while_its_node_lives() -> None:
    # The acceptance (or a nudge of it) timed out, but the node got it and
    # runs the work: placing it again would run it twice (burst seed 2).
    nodes = configs(4)
    nodes[3] = replace(nodes[3], labels={"role": "runner"})
    cluster = settled(Cluster(nodes))
    cluster.duration = lambda run, s: 10.0
    cluster.submit(0, "j", spec(Constraints=[{"Key": "role", "Operator": "=", "Values": ["runner"]}]))
    cluster.run(cluster.now + 1.0)
    job = cluster.job("j")
    leader = cluster.nodes[job.header.leader]
    (execution,) = [e for e in leader.jobs["j"].executions.values() if e.state == ExecutionState.RUNNING]
    timed_out = BidDecision("j", execution.id, job.header.epoch, True, "bid accepted", execution.partition)
    leader.handle(SendFailed(execution.node_id, timed_out, "stream timed out"), cluster.now)
    assert leader.jobs["j"].executions[execution.id].state == ExecutionState.RUNNING
    cluster.run(60)
    assert cluster.job("j").header.state == JobState.COMPLETED
    assert [r.execution_id for r in cluster.runs.values() if r.job_id == "j"] == [execution.id]


def test_a_leader_restarted_from_a_stale_store_learns_what_it_placed_before_it_leads_again() -> None:
    # Killed before it saved its last writes: its store shows the job as
    # submitted, with nothing placed; the run it placed goes on elsewhere.
    nodes = configs(4)
    nodes[3] = replace(nodes[3], labels={"role": "runner"})
    ids = [c.node_id for c in nodes]
    job_id = next(f"r{i}" for i in range(1000) if election.rank(f"r{i}", ids, k=1)[0] not in ("n00", "n03"))
    leader = election.rank(job_id, ids, k=1)[0]
    cluster = settled(Cluster(nodes))
    cluster.duration = lambda run, s: 30.0
    cluster.submit(0, job_id, spec(Constraints=[{"Key": "role", "Operator": "=", "Values": ["runner"]}]))
    cluster.run(cluster.now + 0.015)
    saved = cluster._disk[leader][job_id]
    assert all(e.state == ExecutionState.ASK_FOR_BID for e in saved.executions)  # asked, not yet placed
    cluster.run(cluster.now + 1.0)
    (run,) = cluster.running(job_id)
    cluster.crash(leader)
    cluster._disk[leader][job_id] = saved
    cluster.restart(leader)
    cluster.run(60)
    assert [r.execution_id for r in cluster.runs.values() if r.job_id == job_id] == [run.execution_id]
    assert cluster.job(job_id, 0).header.state == JobState.COMPLETED


def test_a_queued_job_whose_leader_restarted_still_fails_at_its_queue_timeout() -> None:
    # The QueueTimeout timer dies with the process; the leader that leads the
    # job after (the same node restarted, burst seed 18) sets it again, from
    # when the job was queued.
    cluster = settled(Cluster(configs(3)))
    cluster.submit(0, "big", spec(Resources={"CPU": "8"}, Timeouts={"QueueTimeout": 30}))
    cluster.run(8)
    header = cluster.job("big").header
    assert header.state == JobState.QUEUED
    cluster.crash(header.leader)
    cluster.restart(header.leader)
    cluster.run(60)
    job = cluster.job("big")
    assert job.header.state == JobState.FAILED and "QueueTimeout" in job.header.message


def test_a_restarted_leader_asks_the_keepers_of_its_jobs_before_it_leads_them() -> None:
    # Burst seed 38: a leader restarted after its successor took the job over
    # resumed it at the deposed epoch before gossip told it, and placed the
    # job's partition again beside the new leader's run.
    cluster = settled(Cluster(configs(5)))
    cluster.duration = lambda run, s: 1000.0
    cluster.submit(1, "j", spec(count=1))
    cluster.run(5)
    header = cluster.job("j", 1).header
    leader = header.leader
    cluster.crash(leader)
    cluster.run(30)
    asked = sends(cluster, RecordRequest)
    cluster.restart(leader)
    cluster.run(cluster.now + 0.1)
    assert {peer for peer, message in asked if message.job_id == "j"} >= header.keepers - {leader}


def test_a_round_decided_after_the_executors_running_record_came_in_leaves_that_run_be() -> None:
    # A leader restarted with a round open that it had decided before (burst
    # seed 63) learns from a keeper that a bidder runs the work (its own
    # record, at revision 0, beats the ask). A bid of that node still held
    # for the round must not be decided again: the record cannot move back
    # to a bid, and the run keeps its partition.
    cluster = held_cluster()  # n02's probe holds its bid: the round stays open
    cluster.submit(0, "j", spec(count=3))
    cluster.run(cluster.now + 5)
    leader = cluster.node(2)
    ask = next(e for e in cluster.job("j", 2).executions.values() if e.node_id == "n01")
    assert cluster.job("j", 2).header.leader == "n02" and ask.id in leader.leader._answers["j"]
    running = replace(ask, state=ExecutionState.RUNNING, desired=DesiredState.RUNNING, partition=0, revision=0)
    decisions = sends(cluster, BidDecision)
    cluster.inject(2, Received("n01", Records((JobDelta(cluster.job("j", 1).header, (running,)),))))
    cluster.inject(2, ProbeAnswered(the_hold(cluster), ProbeVerdict(True, "looks fine")))  # the round is decided
    cluster.run(cluster.now + 1)
    assert cluster.job("j", 2).executions[ask.id].state == ExecutionState.RUNNING
    assert not [d for _, d in decisions if d.execution_id == ask.id]
    assert {d.partition for _, d in decisions if d.accepted} == {1, 2}
