"""Who may write what (`protocols.authority`): one test per rule, then the
rules at a node's door."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocols import authority, election
from protocols.authority import Authority
from protocols.events import Received
from protocols.messages import (
    AskBid,
    BidDecision,
    BidReply,
    CancelExecution,
    DigestReply,
    ExecutionUpdate,
    JobUpdated,
    LeaderChanged,
    Members,
    NodeInfo,
    NodeLeft,
    Records,
    SubmitToLeader,
)
from protocols.node import NodeConfig, initial_info
from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionState,
    HistoryEvent,
    JobDelta,
    JobHeader,
    JobReplica,
    JobState,
)
from tests.test_node import one_service, spec

IDS = [f"n{i:02d}" for i in range(40)]
RANKED = election.rank("j", IDS)
LEADER, S1, S2 = RANKED[:3]
NEAR = RANKED[5]  # high in the ranking, but no keeper: a plausible successor we did not hear of
SUBMITTER = RANKED[30]
RUNNER = RANKED[20]
FORGER = RANKED[-1]  # at the bottom of the ranking, no part in the job
ME = RANKED[10]
SPEC = spec("service", 1)


def header(**changes: object) -> JobHeader:
    base = JobHeader(
        id="j", spec=SPEC, name="j", state=JobState.RUNNING, message="placed", version=1, revision=10, epoch=2,
        leader=LEADER, successors=(S1, S2), create_time=1.0, modify_time=5.0, submitter=SUBMITTER,
    )
    return replace(base, **changes)


def execution(node_id: str = RUNNER, **changes: object) -> ExecutionRecord:
    base = ExecutionRecord(
        id="e-1", job_id="j", node_id=node_id, partition=0, state=ExecutionState.RUNNING,
        desired=DesiredState.RUNNING, epoch=2, revision=3, create_time=2.0, modify_time=3.0,
    )
    return replace(base, **changes)


def replica(**changes: object) -> JobReplica:
    history = (
        HistoryEvent(1.0, 1, SUBMITTER, "JobStateChanged", "submitted"),
        HistoryEvent(2.0, 1, "n-old-leader", "Note", "led epoch 1"),
    )
    return JobReplica.from_delta(JobDelta(header(**changes), (execution(),), history))


def info(node_id: str, **changes: object) -> NodeInfo:
    return replace(initial_info(NodeConfig(node_id=node_id)), **{"seq": 10, **changes})


class View:
    """A node's narrow view for the checks: its records and members."""

    def __init__(self, *replicas: JobReplica, alive: list[str] = IDS, infos: dict[str, NodeInfo] | None = None,
                 follows: tuple[str, str] | None = None) -> None:
        self.jobs = {r.id: r for r in replicas}
        self.alive = sorted(alive)
        self.infos = infos or {}
        self.authority = Authority(
            ME, self.jobs, lambda n: n in self.alive, self.infos.get, lambda: self.alive,
            lambda job_id, node_id: (job_id, node_id) == follows,
        )

    def check(self, sender: str, message: object) -> str | None:
        return self.authority.check(sender, message)


def updated(**changes: object) -> JobUpdated:
    return JobUpdated(JobDelta(header(**changes)))


# ------------------------------------------------------------ members


def test_a_node_speaks_only_for_itself() -> None:
    view = View()
    assert view.check(FORGER, info(FORGER)) is None
    assert view.check(FORGER, info(LEADER)) == authority.NOT_ITSELF
    assert view.check(FORGER, NodeLeft(FORGER, 1)) is None
    assert view.check(FORGER, NodeLeft(LEADER, 1)) == authority.NOT_ITSELF


def test_a_member_list_introduces_nodes_but_never_rewrites_a_live_one() -> None:
    view = View(infos={LEADER: info(LEADER)})
    assert view.check(FORGER, Members((info("n-new"), info(LEADER, seq=12)))) is None  # a welcome
    assert view.check(FORGER, Members((info(LEADER, seq=10 + 1000),))) == authority.LIVE_MEMBER
    assert view.check(FORGER, Members((info(LEADER, incarnation=2),))) == authority.LIVE_MEMBER
    assert View(alive=[], infos={LEADER: info(LEADER)}).check(FORGER, Members((info(LEADER, incarnation=2),))) is None


# ------------------------------------------------------------ the job's record


def test_only_the_leader_writes_a_job() -> None:
    view = View(replica())
    assert view.check(LEADER, updated(revision=11)) is None
    # The attack of issue 12: a member fails a job it does not lead.
    assert view.check(FORGER, updated(state=JobState.FAILED, revision=1010)) == authority.NOT_LEADER
    assert view.check(S1, updated(state=JobState.FAILED, revision=1010)) == authority.NOT_LEADER  # a keeper too
    assert view.check(FORGER, updated(leader=FORGER, epoch=3, state=JobState.FAILED)) == authority.NOT_ENTITLED
    assert view.check(FORGER, updated(leader=FORGER, epoch=2, revision=11)) == authority.NOT_ENTITLED
    assert view.authority.refused == {
        "JobUpdated: " + authority.NOT_LEADER: 2,
        "JobUpdated: " + authority.NOT_ENTITLED: 2,
    }


def test_a_successor_takes_over_with_a_higher_epoch() -> None:
    view = View(replica())
    assert view.check(S1, updated(leader=S1, successors=(S2, LEADER), epoch=3)) is None
    # one the ranking puts near the top, once the chain we know is broken: a
    # keeper a failover we missed added, then a takeover
    assert view.check(NEAR, updated(leader=NEAR, successors=(S2,), epoch=4)) == authority.NOT_ENTITLED
    broken = View(replica(), alive=[n for n in IDS if n not in (LEADER, S1)])
    assert broken.check(NEAR, updated(leader=NEAR, successors=(S2,), epoch=4)) is None
    assert broken.check(FORGER, updated(leader=FORGER, successors=(S2,), epoch=4)) == authority.NOT_ENTITLED
    # a node that led before, as the history shows, writes late at its old epoch
    late = (execution(id="e-9", epoch=1),)  # (a late write that brings nothing new needs no authority)
    old = JobUpdated(JobDelta(header(leader="n-old-leader", epoch=1, revision=30), late))
    assert view.check("n-old-leader", old) is None
    forged = JobUpdated(JobDelta(header(leader=FORGER, epoch=1, revision=30), late))
    assert view.check(FORGER, forged) == authority.NOT_ENTITLED


def test_the_submitter_hands_a_job_on_to_a_keeper() -> None:
    view = View(replica())
    assert view.check(SUBMITTER, updated(leader=S1, successors=(S2,), epoch=3)) is None
    assert view.check(SUBMITTER, updated(leader=SUBMITTER, successors=(S1, S2), epoch=3)) is None
    assert view.check(SUBMITTER, updated(leader=FORGER, epoch=3)) == authority.NOT_LEADER


def test_no_write_changes_a_jobs_spec_submitter_or_creation() -> None:
    view = View(replica())
    other = spec("service", 2)
    assert view.check(LEADER, updated(spec=other, revision=11)) == authority.CHANGED_SPEC
    assert view.check(LEADER, updated(submitter=LEADER, revision=11)) == authority.CHANGED_SPEC
    assert view.check(LEADER, updated(create_time=0.0, revision=11)) == authority.CHANGED_SPEC


def test_a_write_that_teaches_nothing_needs_no_authority() -> None:
    held = replica()
    assert View(held).check(FORGER, JobUpdated(held.snapshot())) is None
    assert View(held).check(FORGER, Records((held.snapshot(),))) is None


def test_a_job_we_lack_comes_from_its_leader_or_submitter() -> None:
    view = View()
    assert view.check(LEADER, updated()) is None
    assert view.check(SUBMITTER, updated(epoch=1, revision=1)) is None
    assert view.check(FORGER, updated()) == authority.NOT_LEADER


def test_a_submit_only_creates() -> None:
    new = SubmitToLeader(JobDelta(header(epoch=1, revision=1)))
    assert View().check(SUBMITTER, new) is None
    assert View().check(FORGER, new) == authority.NOT_SUBMITTER
    view = View(replica())
    other = spec("service", 3)
    assert view.check(FORGER, SubmitToLeader(JobDelta(header(spec=other, submitter=FORGER)))) == authority.RESUBMITTED
    assert view.check(FORGER, SubmitToLeader(JobDelta(header(spec=other)))) == authority.NOT_SUBMITTER
    assert view.check(SUBMITTER, SubmitToLeader(JobDelta(header(spec=other)))) == authority.RESUBMITTED
    # its submitter hands it on, its leader not answering: to a keeper
    assert view.check(SUBMITTER, SubmitToLeader(JobDelta(header(leader=S1, epoch=3)))) is None
    assert view.check(SUBMITTER, SubmitToLeader(JobDelta(header(leader=FORGER, epoch=3)))) == authority.RESUBMITTED


# ------------------------------------------------------------ repairs


def altered() -> JobDelta:
    return JobDelta(header(state=JobState.FAILED, revision=1010), (execution(state=ExecutionState.FAILED, revision=99),))


def test_only_a_keeper_or_a_runner_relays_a_record_we_hold() -> None:
    view = View(replica())
    for relay in (S1, S2, SUBMITTER, LEADER, RUNNER):
        assert view.check(relay, Records((altered(),))) is None  # trusted: see the module's doc
    assert view.check(FORGER, Records((altered(),))) == authority.NOT_RELAYER
    assert view.check(FORGER, DigestReply(deltas=(altered(),))) == authority.NOT_RELAYER
    assert view.check(FORGER, Records((replica().snapshot(), altered()))) == authority.NOT_RELAYER  # one bad record spoils it


def test_a_leader_we_report_to_answers_with_its_record() -> None:
    view = View(replica(), follows=("j", FORGER))
    assert view.check(FORGER, Records((altered(),))) is None


def test_a_keeper_since_a_failover_we_missed_relays() -> None:
    newer = JobDelta(header(leader=S1, successors=(S2, NEAR), epoch=3))
    broken = View(replica(), alive=[n for n in IDS if n != LEADER])
    assert broken.check(NEAR, Records((newer,))) is None
    assert View(replica()).check(NEAR, Records((newer,))) is None  # even while the chain we know looks whole
    forged = JobDelta(header(leader=S1, successors=(S2, FORGER), epoch=3))
    assert broken.check(FORGER, Records((forged,))) == authority.NOT_RELAYER


def test_a_record_we_lack_comes_from_a_node_it_names() -> None:
    view = View()
    assert view.check(S1, Records((altered(),))) is None
    assert view.check(FORGER, Records((altered(),))) == authority.NOT_NAMED
    assert view.check(FORGER, DigestReply(deltas=(altered(),))) == authority.NOT_NAMED


def test_a_relay_changes_no_spec() -> None:
    assert View(replica()).check(S1, Records((JobDelta(header(spec=spec("service", 2))),))) == authority.CHANGED_SPEC


# ------------------------------------------------------------ executions


def test_only_its_node_reports_an_execution() -> None:
    view = View(replica())
    update = ExecutionUpdate("j", "e-1", 2, ExecutionState.COMPLETED)
    assert view.check(RUNNER, update) is None
    assert view.check(FORGER, update) == authority.OTHERS_EXECUTION
    assert view.check(LEADER, update) == authority.OTHERS_EXECUTION
    assert view.check(FORGER, BidReply("j", "e-1", 2, False, "no")) == authority.OTHERS_EXECUTION
    assert view.check(FORGER, ExecutionUpdate("j", "e-unknown", 2, ExecutionState.FAILED)) is None  # ignored anyway


@pytest.mark.parametrize(
    "order",
    [
        lambda sender, epoch: BidDecision("j", "e-1", epoch, True, "accepted", 0),
        lambda sender, epoch: CancelExecution("j", "e-1", epoch, "stop"),
        lambda sender, epoch: LeaderChanged("j", epoch, sender),
        lambda sender, epoch: AskBid(header(leader=sender, epoch=epoch), "e-2"),
    ],
    ids=["BidDecision", "CancelExecution", "LeaderChanged", "AskBid"],
)
def test_only_the_leader_orders_an_executor(order) -> None:  # type: ignore[no-untyped-def]
    view = View(replica())
    assert view.check(LEADER, order(LEADER, 2)) is None
    assert view.check(S1, order(S1, 3)) is None  # a successor that took over
    assert view.check(FORGER, order(FORGER, 2)) == authority.NOT_ITS_LEADER
    assert view.check(FORGER, order(FORGER, 3)) == authority.NOT_ITS_LEADER


def test_orders_name_their_sender() -> None:
    view = View(replica())
    assert view.check(FORGER, LeaderChanged("j", 3, S1)) == authority.NOT_ITS_LEADER
    assert view.check(FORGER, AskBid(header(), "e-2")) == authority.NOT_ITS_LEADER


def test_what_we_tell_ourselves_is_not_checked() -> None:
    view = View(replica())
    assert view.check(ME, updated(leader=ME, state=JobState.FAILED, revision=1010)) is None
    assert not view.authority.refused


# ------------------------------------------------------------ at a node's door


def test_forged_writes_change_nothing_on_any_node_and_are_counted() -> None:
    cluster, _ = one_service(24)
    before = {n: node.jobs["j"].header for n, node in cluster.nodes.items() if "j" in node.jobs}
    job = cluster.job("j")
    run = next(e for e in job.executions.values() if e.state == ExecutionState.RUNNING)
    ranked = election.rank("j", list(cluster.nodes))
    forger = next(n for n in reversed(ranked) if n != run.node_id and not job.header.kept_by(n))
    failed = replace(job.header, state=JobState.FAILED, revision=job.header.revision + 1000)
    holders = [i for i, c in enumerate(cluster.configs) if c.node_id in before]
    for index in holders:
        cluster.inject(index, Received(forger, JobUpdated(JobDelta(failed))))
        cluster.inject(index, Received(forger, Records((JobDelta(failed),))))
    runner = next(i for i, c in enumerate(cluster.configs) if c.node_id == run.node_id)
    cluster.inject(runner, Received(forger, CancelExecution("j", run.id, job.header.epoch + 1, "forged")))
    leader = next(i for i, c in enumerate(cluster.configs) if c.node_id == job.header.leader)
    cluster.inject(leader, Received(forger, ExecutionUpdate("j", run.id, job.header.epoch, ExecutionState.FAILED, "forged")))
    cluster.run(cluster.now + 10)
    for node_id, node in cluster.nodes.items():
        if node_id in before:
            assert node.jobs["j"].header.state == JobState.RUNNING
    assert cluster.job("j").executions[run.id].state == ExecutionState.RUNNING
    assert [r.node for r in cluster.running("j")] == [run.node_id]
    refused = sum((node.authority.refused for node in cluster.nodes.values()), start=type(cluster.node(0).authority.refused)())
    assert refused["JobUpdated: " + authority.NOT_LEADER] == len(holders)
    assert refused["Records: " + authority.NOT_RELAYER] == len(holders)
    assert refused["CancelExecution: " + authority.NOT_ITS_LEADER] == 1
    assert refused["ExecutionUpdate: " + authority.OTHERS_EXECUTION] == 1


def test_an_honest_cluster_refuses_nothing_through_failovers() -> None:
    cluster, header = one_service(24)
    cluster.crash(header.leader)
    cluster.run(cluster.now + 60)
    cluster.restart(header.leader)
    cluster.run(cluster.now + 60)
    assert cluster.job("j", next(i for i, c in enumerate(cluster.configs) if c.node_id != header.leader)).header.epoch > 1
    assert not any(node.authority.refused for node in cluster.nodes.values())
