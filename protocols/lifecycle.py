"""The lifecycles of a job, of an execution, and of a bid on the executor, as tables.

Each table maps a state to the states it may move to, as h11 writes its
connection states: what is not listed is illegal. A leader's write goes
through `check_write` (in `protocols.replication`): an illegal move raises
`IllegalMove` in strict mode (the tests turn it on, see `tests/conftest.py`),
and otherwise is dropped and counted with its reason (the node's `dropped`),
so a bug never writes a job back to life.

`EXECUTION_PROGRESS` orders an execution's states: an executor's report that
does not move its execution forward is stale, and ignored.

Print the tables with `python -m protocols.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from protocols.records import EXECUTION_PROGRESS as _PROGRESS
from protocols.records import ExecutionState, JobState

_E = ExecutionState
_J = JobState
_EXECUTION_ENDS = frozenset({_E.COMPLETED, _E.FAILED, _E.CANCELLED})


class BidStage(StrEnum):
    """Where the executor's own side of an execution is (`protocols.executor`)."""

    PROBING = "probing"  # asked for a bid: the selection policy (and its probe) decide
    BID = "bid"  # bid made, resources held until the leader decides or `bid_hold` passes
    RUNNING = "running"  # the leader accepted: it runs (until it ends, and is forgotten)


# Legal moves of an execution, as the leader writes it. An execution is
# created in AskForBid (`NodeContext.new_execution`); any live one may fail
# (its node was lost) or be cancelled (the job stopped, a surplus, a split
# healed). A round's answers and its decision are written in one go, so an
# ask may move straight to BidAccepted or BidRejected. The one move out of an
# end: when both sides of a healed split completed one batch partition, the
# leader keeps one completion and cancels the other, from a newer epoch
# (`Leader._cancel_surplus`; the merge keeps ends final within an epoch).
EXECUTION_MOVES: Mapping[ExecutionState, frozenset[ExecutionState]] = {
    _E.NEW: frozenset({_E.ASK_FOR_BID, _E.FAILED, _E.CANCELLED}),
    _E.ASK_FOR_BID: frozenset(
        {_E.ASK_FOR_BID_ACCEPTED, _E.ASK_FOR_BID_REJECTED, _E.BID_ACCEPTED, _E.BID_REJECTED, _E.FAILED, _E.CANCELLED}
    ),
    _E.ASK_FOR_BID_ACCEPTED: frozenset({_E.BID_ACCEPTED, _E.BID_REJECTED, _E.FAILED, _E.CANCELLED}),
    _E.BID_ACCEPTED: frozenset({_E.RUNNING, _E.PUBLISHING, *_EXECUTION_ENDS}),
    _E.RUNNING: frozenset({_E.PUBLISHING, *_EXECUTION_ENDS}),
    _E.PUBLISHING: _EXECUTION_ENDS,
    _E.ASK_FOR_BID_REJECTED: frozenset(),
    _E.BID_REJECTED: frozenset(),
    _E.COMPLETED: frozenset({_E.CANCELLED}),  # a batch partition's second completion, after a split healed
    _E.FAILED: frozenset(),
    _E.CANCELLED: frozenset(),
}

# How far along an execution is: a report moves it forward only (defined with
# the record, whose merge also uses it).
EXECUTION_PROGRESS: Mapping[ExecutionState, int] = _PROGRESS

# Legal moves of a job. A queued batch job runs when placed; a running one
# whose work all failed may queue again (within its QueueTimeout); an ended
# job stays ended.
_JOB_ENDS = frozenset({_J.COMPLETED, _J.FAILED, _J.STOPPED})
JOB_MOVES: Mapping[JobState, frozenset[JobState]] = {
    _J.PENDING: frozenset({_J.QUEUED, _J.RUNNING, *_JOB_ENDS}),
    _J.QUEUED: frozenset({_J.RUNNING, *_JOB_ENDS}),
    _J.RUNNING: frozenset({_J.QUEUED, *_JOB_ENDS}),
    _J.COMPLETED: frozenset(),
    _J.FAILED: frozenset(),
    _J.STOPPED: frozenset(),
}

# The executor's side of a bid: a decision may come while a probe still runs.
BID_MOVES: Mapping[BidStage, frozenset[BidStage]] = {
    BidStage.PROBING: frozenset({BidStage.BID, BidStage.RUNNING}),
    BidStage.BID: frozenset({BidStage.RUNNING}),
    BidStage.RUNNING: frozenset(),
}


class IllegalMove(Exception):
    """A write would move a job or an execution where its lifecycle forbids."""


_strict = False


def set_strict(strict: bool) -> None:
    """Raise on an illegal move instead of dropping it (for tests: a process-wide switch)."""
    global _strict
    _strict = strict


def strict() -> bool:
    return _strict


def execution_move(old: ExecutionState, new: ExecutionState) -> str | None:
    """None if an execution may move from `old` to `new` (staying put is no move); else why not."""
    if old == new or new in EXECUTION_MOVES[old]:
        return None
    return f"an execution may not move from {old} to {new}"


def job_move(old: JobState, new: JobState) -> str | None:
    """None if a job may move from `old` to `new` (staying put is no move); else why not."""
    if old == new or new in JOB_MOVES[old]:
        return None
    return f"a job may not move from {old} to {new}"


def describe() -> str:
    """The tables, as text a reader can follow."""
    lines = []
    for title, table in (("Job", JOB_MOVES), ("Execution", EXECUTION_MOVES), ("Bid (on the executor)", BID_MOVES)):
        lines.append(f"{title} states and their legal moves:")
        width = max(len(str(state)) for state in table)
        for state, moves in table.items():
            targets = ", ".join(str(target) for target in table if target in moves) or "(final)"
            lines.append(f"  {str(state):<{width}}  -> {targets}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(), end="")
