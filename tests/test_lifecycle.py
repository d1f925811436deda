"""The lifecycle tables (`protocols.lifecycle`) and how a node's writes obey them."""

from __future__ import annotations

import random

import pytest

from protocols import lifecycle
from protocols.events import SubmitJob
from protocols.jobspec import JobSpec, job_spec_from_data
from protocols.node import Node, NodeConfig
from protocols.records import ExecutionState, JobState


def _spec() -> JobSpec:
    return job_spec_from_data({
        "Type": "batch",
        "Count": 1,
        "Tasks": [{
            "Engine": {"Type": "wasm", "Params": {"EntryModule": {
                "Target": "/m.wasm", "Source": {"Type": "inline", "Params": {"URL": "data:,x"}}}}},
            "Resources": {"CPU": "500m", "Memory": "256Mb"},
        }],
    }).spec


def _leading_a_job() -> Node:
    """A lone node that submitted (and so leads) job `j`."""
    node = Node(NodeConfig(node_id="n0"), rng=random.Random(1))
    node.start(0.0)
    node.handle(SubmitJob("j", _spec()), 0.1)
    assert node.jobs["j"].header.leader == "n0"
    return node


def test_every_state_has_its_row_and_an_end_leads_nowhere_but_one_documented_way() -> None:
    assert set(lifecycle.EXECUTION_MOVES) == set(ExecutionState) == set(lifecycle.EXECUTION_PROGRESS)
    assert set(lifecycle.JOB_MOVES) == set(JobState)
    for state in JobState:
        assert (lifecycle.JOB_MOVES[state] == frozenset()) == state.terminal
    outs = {state: moves for state, moves in lifecycle.EXECUTION_MOVES.items() if state.terminal and moves}
    assert outs == {ExecutionState.COMPLETED: frozenset({ExecutionState.CANCELLED})}  # a healed split's surplus
    for state, moves in lifecycle.EXECUTION_MOVES.items():  # reports move forward only
        if not state.terminal:
            assert all(lifecycle.EXECUTION_PROGRESS[m] > lifecycle.EXECUTION_PROGRESS[state] for m in moves)


def test_the_tables_print_every_state_and_move() -> None:
    text = lifecycle.describe()
    for state in [*JobState, *ExecutionState, *lifecycle.BidStage]:
        assert f"  {state} " in text
    assert "Running            -> Publishing, Completed, Failed, Cancelled" in text
    assert "Failed             -> (final)" in text


def test_an_ended_job_written_back_to_life_raises_in_strict_mode() -> None:
    node = _leading_a_job()
    replica = node.jobs["j"]
    node.ctx.write(replica, state=JobState.STOPPED, message="stopped")
    with pytest.raises(lifecycle.IllegalMove, match="a job may not move from Stopped to Running"):
        node.ctx.write(replica, state=JobState.RUNNING, message="back to life")
    assert replica.header.state == JobState.STOPPED


def test_outside_strict_mode_an_illegal_move_is_left_out_and_counted_with_its_reason() -> None:
    node = _leading_a_job()
    replica = node.jobs["j"]
    node.ctx.write(replica, state=JobState.STOPPED, message="stopped")
    revision = replica.header.revision
    lifecycle.set_strict(False)
    try:
        node.ctx.write(replica, state=JobState.RUNNING, message="back to life")
    finally:
        lifecycle.set_strict(True)
    assert replica.header.state == JobState.STOPPED and replica.header.revision == revision  # nothing else to write
    assert node.dropped.counts == {"write: job j: a job may not move from Stopped to Running": 1}
    assert node.dropped.take() == [("n0", "write: job j: a job may not move from Stopped to Running")]
    assert node.dropped.take() == []
