"""Bids a probe holds for the node's operator ("shouldWait"), in the
protocol alone: the leader waits as long as the node says it may take, the
operator's word decides, and a hold nobody decides runs out."""

from __future__ import annotations

from dataclasses import replace

from protocols.events import ProbeAnswered, ProbeVerdict
from protocols.node import NodeConfig
from protocols.records import ExecutionState, JobState
from protocols.selection import SelectionPolicy
from tests.cluster import Cluster
from tests.test_node import configs, settled, spec

HOLD = 120.0


def held_cluster() -> Cluster:
    """Three nodes labelled name=<id>; n02 has an http probe that holds every bid."""
    nodes = [replace(c, labels={"name": c.node_id}) for c in configs(3)]
    nodes[2] = replace(nodes[2], policy=SelectionPolicy(probe_http="http://probe"), probe_wait_timeout=HOLD)
    cluster = Cluster(nodes)
    cluster.probe = lambda node, execution: ProbeVerdict(False, "the operator looks at it", wait=True)
    return settled(cluster)


def on_n02() -> dict[str, object]:
    return {"Constraints": [{"Key": "name", "Operator": "=", "Values": ["n02"]}]}


def the_hold(cluster: Cluster) -> str:
    holds = cluster.node(2).executor.holds
    assert len(holds) == 1
    return next(iter(holds))


def test_the_node_announces_how_long_it_may_take_to_answer() -> None:
    cluster = held_cluster()
    info = cluster.node(0).membership.info("n02")
    assert info is not None and info.policy.bid_wait == NodeConfig("x").probe_timeout + HOLD
    assert cluster.node(0).membership.info("n01").policy.bid_wait == 0.0


def test_a_held_bid_runs_once_approved_and_says_so() -> None:
    cluster = held_cluster()
    cluster.submit(0, "j", spec(**on_n02()))
    cluster.run(60)  # long past the bid window: slow is not no
    assert cluster.job("j").header.state == JobState.PENDING
    execution = the_hold(cluster)
    assert cluster.node(2).executor.holds[execution].outcome == ""
    cluster.inject(2, ProbeAnswered(execution, ProbeVerdict(True, "looks fine")))
    cluster.run(90)
    assert cluster.job("j").header.state == JobState.COMPLETED
    assert cluster.node(2).executor.holds[execution].outcome == "approved"


def test_a_held_bid_the_operator_rejects_declines_with_the_reason() -> None:
    cluster = held_cluster()
    cluster.submit(0, "j", spec(**on_n02()))
    cluster.run(10)
    execution = the_hold(cluster)
    cluster.inject(2, ProbeAnswered(execution, ProbeVerdict(False, "not today")))
    cluster.run(20)
    job = cluster.job("j")
    assert job.header.state == JobState.FAILED
    assert job.executions[execution].state == ExecutionState.ASK_FOR_BID_REJECTED
    assert job.executions[execution].message == "the node's operator rejected the bid: not today"


def test_a_hold_nobody_decides_runs_out() -> None:
    cluster = held_cluster()
    cluster.submit(0, "j", spec(**on_n02()))
    cluster.run(HOLD + 30)
    job = cluster.job("j")
    assert job.header.state == JobState.FAILED
    (execution,) = job.executions.values()
    assert execution.message == f"the bid was held for the operator, who did not decide within {HOLD:g} s"
    assert cluster.node(2).executor.holds[execution.id].outcome == "expired"
