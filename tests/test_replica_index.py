"""A replica's indexes (executions by node, failures, faults, active nodes) agree with a scan of its executions."""

from __future__ import annotations

import random
from collections import Counter

from protocols.records import (
    DesiredState,
    ExecutionRecord,
    ExecutionResult,
    ExecutionState,
    JobDelta,
    JobReplica,
)
from tests.test_jobtypes import header
from tests.test_node import spec


def scanned(replica: JobReplica) -> tuple[dict[str, set[str]], Counter[str], int, set[str]]:
    executions = replica.executions.values()
    by_node: dict[str, set[str]] = {}
    for e in executions:
        by_node.setdefault(e.node_id, set()).add(e.id)
    failures = Counter(e.node_id for e in executions if e.state == ExecutionState.FAILED)
    faults = sum(1 for e in executions if e.state == ExecutionState.FAILED and e.result is not None and e.result.job_fault)
    return by_node, +failures, faults, {e.node_id for e in executions if e.state.active}


def indexed(replica: JobReplica) -> tuple[dict[str, set[str]], Counter[str], int, set[str]]:
    by_node = {node: {e.id for e in replica.on_node(node)} for node in replica.by_node}
    for node, executions in replica.by_node.items():
        assert all(replica.executions[e.id] is e for e in executions)  # the newest copy of each
    return by_node, +replica.failures, replica.faults, replica.holders() - replica.header.keepers


def test_indexes_follow_every_merge_in_any_order() -> None:
    rng = random.Random(7)
    states = list(ExecutionState)
    writes = []
    for n in range(300):
        execution_id = f"e{rng.randrange(40)}"
        writes.append(ExecutionRecord(
            id=execution_id, job_id="j", node_id=f"n{int(execution_id[1:]) % 6}", partition=0,
            state=rng.choice(states), desired=DesiredState.RUNNING, epoch=rng.randrange(1, 3), revision=n,
            create_time=1.0, modify_time=float(n), result=ExecutionResult(job_fault=rng.random() < 0.5),
        ))
    for order in range(5):
        replica = JobReplica.from_delta(JobDelta(header(spec("ops", None))))
        shuffled = writes[:]
        random.Random(order).shuffle(shuffled)
        for start in range(0, len(shuffled), 7):
            replica.apply(JobDelta(replica.header, tuple(shuffled[start:start + 7])))
            assert indexed(replica) == scanned(replica)
        assert sum(replica.failures.values()) == sum(1 for e in replica.executions.values() if e.state == ExecutionState.FAILED)
