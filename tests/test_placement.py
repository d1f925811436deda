"""Placement as pure functions: fit checks, which earlier executions rule a node out, choosing and ranking."""

from __future__ import annotations

import random
from collections import Counter

from protocols import placement
from protocols.messages import Capacity, NodeInfo, PolicySummary
from protocols.placement import Recall
from protocols.records import DesiredState, ExecutionRecord, ExecutionState
from tests.test_node import spec

NOW = 1000.0


def info(node_id: str, *, engines: tuple[str, ...] = ("wasm",), labels: dict[str, str] | None = None,
         free: Capacity = Capacity(cpu=2000, memory=2 << 30, disk=10 << 30)) -> NodeInfo:
    return NodeInfo(
        node_id=node_id, labels=labels or {}, capacity=Capacity(cpu=2000, memory=2 << 30, disk=10 << 30), free=free,
        engines=engines, publishers=("local",), storages=("inline",), local_data=(), policy=PolicySummary(),
        version="t", incarnation=1, seq=1, heartbeat_interval=1.0,
    )


def execution(node_id: str, state: ExecutionState, *, at: float = NOW - 1, message: str = "") -> ExecutionRecord:
    return ExecutionRecord(
        id=f"e-{node_id}-{state}", job_id="j", node_id=node_id, partition=0, state=state, desired=DesiredState.RUNNING,
        epoch=1, revision=1, create_time=at, modify_time=at, message=message,
    )


def recall(full: dict[str, tuple[float, int]] | None = None, *, room: bool = False, restarted: bool = False) -> Recall:
    return Recall(
        now=NOW, decline_memory=30.0, queue_retry_interval=2.0, full=full or {},
        room_since=lambda node_id, since: room, restarted=lambda node_id, since: restarted,
    )


def ruled_out(e: ExecutionRecord, r: Recall, *, until_restart: bool = False, holds: bool = False) -> bool:
    return placement.rules_out(e, r, until_restart=until_restart, holds_node=lambda _: holds)


def test_a_node_without_the_engine_never_fits_and_the_reason_says_so() -> None:
    wasm_job = spec("batch")
    assert placement.check_fit(wasm_job, info("a")) is None
    reason = placement.check_fit(wasm_job, info("b", engines=("docker",)))
    assert reason is not None and "no wasm engine" in reason
    assert placement.unfit(wasm_job, info("b", engines=("docker",))) == reason


def test_the_fit_memo_answers_for_a_node_what_the_check_says_of_it() -> None:
    """`unfit` shares an answer between nodes of one kind: it must be the
    answer each would get alone, whatever their ids, and change with
    anything else the check reads."""
    job = spec("batch")
    docker_only = placement.check_fit(job, info("x", engines=("docker",)))
    assert docker_only is not None
    for node_id in ("m1", "m2"):
        assert placement.unfit(job, info(node_id, engines=("docker",))) == docker_only
        assert placement.unfit(job, info(node_id)) is None  # the same node, a newer info
    for labels in ({"a": "1", "b": "2"}, {"b": "2", "a": "1"}):
        assert placement.unfit(job, info("m3", engines=("docker",), labels=labels)) == placement.check_fit(
            job, info("m3", engines=("docker",), labels=labels)
        )


def test_why_no_node_counts_nodes_by_reason() -> None:
    wasm_job = spec("batch")
    full = Capacity(cpu=100, memory=1 << 20, disk=1 << 20)
    infos = [info("a", engines=("docker",)), info("b", engines=("docker",)), info("c", free=full)]
    declined = execution("d", ExecutionState.ASK_FOR_BID_REJECTED, message="probe said no: exit 1")
    why = placement.why_no_node(wasm_job, infos, [declined])
    assert why == "2 node(s): this node has no wasm engine; 1 node(s): too few free resources; 1 node(s): declined: probe said no"
    assert placement.why_no_node(wasm_job, [], []) == "no node is alive"


def test_work_in_progress_always_rules_its_node_out() -> None:
    for state in (ExecutionState.ASK_FOR_BID, ExecutionState.BID_ACCEPTED, ExecutionState.RUNNING):
        assert ruled_out(execution("a", state, at=0.0), recall())


def test_a_no_is_remembered_for_a_while_and_until_a_restart_when_asked() -> None:
    recent = execution("a", ExecutionState.ASK_FOR_BID_REJECTED, at=NOW - 10, message="constraint")
    old = execution("a", ExecutionState.ASK_FOR_BID_REJECTED, at=NOW - 100, message="constraint")
    assert ruled_out(recent, recall())
    assert not ruled_out(old, recall())
    assert ruled_out(old, recall(), until_restart=True)  # a daemon's no stands ...
    assert not ruled_out(old, recall(restarted=True), until_restart=True)  # ... until the node restarts


def test_an_unanswered_ask_is_not_a_no() -> None:
    silent = execution("a", ExecutionState.ASK_FOR_BID_REJECTED, at=NOW - 1, message=f"{placement.NO_ANSWER} in time")
    assert placement.unanswered(silent)
    assert ruled_out(silent, recall())  # the others get their chance first
    later = execution("a", ExecutionState.ASK_FOR_BID_REJECTED, at=NOW - 5, message=placement.NO_ANSWER)
    assert not ruled_out(later, recall(), holds=True)  # then asked again, whatever the type


def test_a_full_node_backs_off_until_it_shows_room() -> None:
    busy = execution("a", ExecutionState.ASK_FOR_BID_REJECTED, at=NOW - 100, message="busy")
    assert ruled_out(busy, recall({"a": (NOW + 5, 1)}))
    assert not ruled_out(busy, recall({"a": (NOW + 5, 1)}, room=True))
    assert not ruled_out(busy, recall({"a": (NOW - 5, 1)}))


def test_an_ended_run_holds_its_node_only_when_the_type_says() -> None:
    done = execution("a", ExecutionState.COMPLETED)
    assert not ruled_out(done, recall())
    assert ruled_out(done, recall(), holds=True)


def test_backoff_doubles_while_full_up_to_a_cap_and_stretches_for_daemons() -> None:
    first = placement.backoff(None, NOW, 1)
    assert first == (NOW + placement.BUSY_RETRY_FIRST, 1)
    second = placement.backoff(first, NOW, 1)
    assert second == (NOW + 2 * placement.BUSY_RETRY_FIRST, 2)
    assert placement.backoff((0.0, 40), NOW, 1) == (NOW + placement.BUSY_RETRY_MAX, 41)
    assert placement.backoff(None, NOW, 6) == (NOW + 6 * placement.BUSY_RETRY_FIRST, 1)


def test_choose_skips_the_excluded_and_the_full_and_puts_earlier_failures_last() -> None:
    ranked = ["a", "b", "c", "d", "e", "f"]
    failures = Counter({"b": 2, "d": 1})
    first, tried = placement.choose(ranked, {"c"}, failures, 2, room=lambda n: n != "e")
    assert (first, tried) == (["a", "f"], ["b", "d"])
    assert placement.picked(first, tried, failures, 3) == ["a", "f", "d"]  # the least failed of the rest


def test_choose_stops_once_enough_are_found_and_every_node_ignores_room() -> None:
    first, tried = placement.choose(["a", "b", "c"], set(), Counter(), 1, room=lambda n: True)
    assert (first, tried) == (["a"], [])
    first, tried = placement.choose(["c", "a", "b"], {"b"}, Counter({"a": 1}), None, room=lambda n: False)
    assert placement.picked(first, tried, Counter({"a": 1}), None) == ["a", "c"]


def test_bids_rank_by_failures_then_free_share() -> None:
    bids = [execution(n, ExecutionState.ASK_FOR_BID_ACCEPTED) for n in ("a", "b", "c")]
    free = {"a": 0.5, "b": 1.5, "c": 1.9}
    ranked = placement.rank_bids(bids, Counter({"c": 1}), lambda n: 0.0, free.__getitem__, random.Random(1))
    assert [e.node_id for e in ranked] == ["b", "a", "c"]


def test_free_score_is_the_free_share_of_cpu_and_memory() -> None:
    capacity = Capacity(cpu=2000, memory=4 << 30)
    assert placement.free_score(Capacity(cpu=1000, memory=1 << 30), capacity) == 0.75
    assert placement.free_score(None, capacity) == 0.0
    assert placement.fits(Capacity(cpu=500, memory=256 << 20), spec("batch").task.resources)
    assert not placement.fits(Capacity(cpu=499, memory=256 << 20), spec("batch").task.resources)
    assert not placement.fits(None, spec("batch").task.resources)
