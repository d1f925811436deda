"""The simulator's CPU model: a node's one thread takes inputs in turn, so a
busy node answers late (as a real peer does), and what it does costs it too."""

from __future__ import annotations

import random
from typing import Any

import pytest

from protocols.events import JobChanged, Received, Send, TimerFired
from sim.cpu import CpuModel
from sim.network import NetworkConfig
from sim.world import World
from tests.test_sim_network import Snap, TinyNode


def pinger_world(cpu: CpuModel | None) -> tuple[World, dict[str, TinyNode]]:
    """n0 sends n1 ten messages at once; n1 answers each with a Send back."""
    world = World(random.Random(1), NetworkConfig(latency_median=0.01, latency_sigma=0.0, link_sigma=0.0), cpu=cpu)
    nodes: dict[str, TinyNode] = {}

    def react(node: TinyNode, event: Any, now: float) -> list[Any]:
        if isinstance(event, TimerFired):
            return [Send("n1", i) for i in range(10)]
        if isinstance(event, Received) and node.node_id == "n1":
            return [Send("n0", event.message)]
        return []

    for node_id in ("n0", "n1"):
        world.add_node(node_id, lambda inc, restored, node_id=node_id: nodes.setdefault(node_id, TinyNode(node_id, react=react)))
        world.start(node_id)
    world.inject("n0", TimerFired("go"))
    world.run(10.0)
    return world, nodes


def answers(node: TinyNode) -> list[float]:
    return [t for t, e in node.seen if isinstance(e, Received)]


def test_without_a_cpu_model_every_answer_comes_back_at_once() -> None:
    _, nodes = pinger_world(None)
    assert answers(nodes["n0"]) == pytest.approx([0.02] * 10)


def test_a_busy_node_takes_inputs_in_turn_and_answers_late() -> None:
    cpu = CpuModel(scale=10.0)  # a frame received idle: 25 ms, from the backlog: 5 ms; a lone send: 25 ms
    world, nodes = pinger_world(cpu)
    taken = answers(nodes["n1"])
    assert taken == sorted(taken) and len(taken) == 10
    gaps = [b - a for a, b in zip(taken, taken[1:])]
    assert gaps[0] == pytest.approx(0.05)  # the first found the thread idle: a lone frame + the send it makes
    assert all(g == pytest.approx(0.03) for g in gaps[1:])  # the rest waited: read with the others
    back = answers(nodes["n0"])
    assert len(back) == 10 and back[-1] >= taken[-1] + 0.01  # the asker sees the backlog as lateness
    assert world.slots["n1"].max_backlog == pytest.approx(0.05 + 8 * 0.03)


def writer_world(crash_at: float, graceful: bool = False) -> tuple[list[Any], list[Any]]:
    """n0 takes three writes at once on a busy thread, then crashes at
    `crash_at` and restarts: (what it saved, what its restart got back)."""
    world = World(random.Random(1), NetworkConfig(), cpu=CpuModel(scale=100.0))  # a write: 20 ms + a save 70 ms
    made: list[TinyNode] = []

    def write(node: TinyNode, event: Any, now: float) -> list[Any]:
        node.jobs["j1"] = Snap(f"j1@{event.key}")
        return [JobChanged("j1")]

    def factory(incarnation: int, restored: list[Any]) -> TinyNode:
        made.append(TinyNode("n0", incarnation, list(restored), write))
        return made[-1]

    world.add_node("n0", factory)
    world.start("n0")
    for revision in (1, 2, 3):
        world.inject("n0", TimerFired(revision))
    world.run(crash_at)
    if graceful:
        world.leave("n0")
    else:
        world.crash("n0")
    saved = list(world.slots["n0"].disk.values())
    world.start("n0")
    return saved, made[-1].restored


def test_a_node_saves_when_its_inbox_drains_and_a_crash_before_loses_the_writes() -> None:
    # The 1st write met an empty inbox (saved); the 2nd was done at 0.09 s with the 3rd waiting (not saved).
    assert writer_world(crash_at=0.15) == (["j1@1"], ["j1@1"])
    assert writer_world(crash_at=1.0) == (["j1@3"], ["j1@3"])
    assert writer_world(crash_at=0.15, graceful=True) == (["j1@2"], ["j1@2"])  # a clean stop saves on its way out


def test_a_cpu_scale_of_zero_is_no_model_and_a_negative_one_is_refused() -> None:
    world, _ = pinger_world(CpuModel(scale=0.0))
    assert world.cpu is None
    with pytest.raises(ValueError, match="scale"):
        CpuModel(scale=-1.0)


def test_a_burst_option_is_jobs_over_seconds_and_nonsense_is_refused_clearly() -> None:
    import click

    from sim.cli import _burst

    assert _burst("200:2") == (200, 100.0)
    for bad in ("200", "x:2", "0:2", "10:0"):
        with pytest.raises(click.BadParameter, match="JOBS"):
            _burst(bad)
