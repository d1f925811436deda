"""The simulator's machinery (clock, network, faults, timers) driven by tiny
test nodes that speak the same Input/Effect types as `protocols.node.Node`."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocols.effects import UnknownEffect
from protocols.events import (
    CancelTimer,
    JobChanged,
    Publish,
    Received,
    Send,
    SendFailed,
    SetTimer,
    TimerFired,
)
from sim.network import NetworkConfig, Partition, SimConfigError
from sim.world import Observer, World

React = Callable[["TinyNode", Any, float], list[Any]]


def _silent(node: TinyNode, event: Any, now: float) -> list[Any]:
    return []


@dataclass
class TinyNode:
    """Records what it is handed; `react` decides what it does about it."""

    node_id: str
    incarnation: int = 1
    restored: list[Any] = field(default_factory=list)
    react: React = _silent
    on_start: list[Any] = field(default_factory=list)
    seen: list[tuple[float, Any]] = field(default_factory=list)
    jobs: dict[str, Any] = field(default_factory=dict)

    def start(self, now: float) -> list[Any]:
        return list(self.on_start)

    def handle(self, event: Any, now: float) -> list[Any]:
        self.seen.append((now, event))
        return self.react(self, event, now)


@dataclass
class Snap:
    """What a TinyNode "writes to disk": one entry per job it holds."""

    value: str

    def snapshot(self) -> str:
        return self.value


def world_of(n: int, seed: int = 1, react: React = _silent, **network: Any) -> tuple[World, dict[str, list[TinyNode]]]:
    """n started tiny nodes; `made[id]` lists each incarnation built."""
    world = World(random.Random(seed), NetworkConfig(**network))
    made: dict[str, list[TinyNode]] = {}
    for i in range(n):
        node_id = f"n{i}"

        def factory(incarnation: int, restored: list[Any], node_id: str = node_id) -> TinyNode:
            node = TinyNode(node_id, incarnation, list(restored), react)
            made.setdefault(node_id, []).append(node)
            return node

        world.add_node(node_id, factory)
        world.start(node_id)
    return world, made


def received(node: TinyNode) -> list[tuple[float, Received]]:
    return [(t, e) for t, e in node.seen if isinstance(e, Received)]


def test_publish_reaches_every_other_live_node_but_not_the_sender() -> None:
    world, made = world_of(5)
    world.inject("n0", TimerFired("go"))
    made["n0"][0].react = lambda node, event, now: [Publish("t", "hello")] if isinstance(event, TimerFired) else []
    world.run(5.0)
    assert received(made["n0"][0]) == []
    for i in range(1, 5):
        [(_, message)] = received(made[f"n{i}"][0])
        assert message == Received("n0", "hello")


def test_latency_is_lognormal_around_the_configured_median() -> None:
    world, made = world_of(20, latency_median=0.05, link_sigma=0.0, latency_sigma=0.5)
    for k in range(200):
        world.inject("n0", TimerFired(k), at=k * 0.02)
    made["n0"][0].react = lambda node, event, now: [Publish("t", ("sent", now))]
    world.run(10.0)
    delays = [t - e.message[1] for i in range(1, 20) for t, e in received(made[f"n{i}"][0])]
    assert len(delays) == 19 * 200
    assert 0.04 < statistics.median(delays) < 0.06
    assert min(delays) > 0 and max(delays) > 2 * 0.05  # a spread, not a constant


def test_pubsub_loss_rate_is_within_bounds() -> None:
    world, made = world_of(50, seed=7, loss=0.1)
    made["n0"][0].react = lambda node, event, now: [Publish("t", now)]
    for k in range(100):
        world.inject("n0", TimerFired(k), at=k * 0.01)
    world.run(10.0)
    got = sum(len(received(made[f"n{i}"][0])) for i in range(1, 50))
    expected = 49 * 100
    assert 0.08 < 1 - got / expected < 0.12
    assert world.dropped == expected - got


def test_lost_send_comes_back_as_send_failed_after_the_stream_timeout() -> None:
    world, made = world_of(2, seed=3, loss=0.5, stream_timeout=2.0)
    made["n0"][0].react = lambda node, event, now: [Send("n1", ("sent", now))] if isinstance(event, TimerFired) else []
    for k in range(200):
        world.inject("n0", TimerFired(k), at=float(k))
    world.run(300.0)
    failures = [(t, e) for t, e in made["n0"][0].seen if isinstance(e, SendFailed)]
    delivered = received(made["n1"][0])
    assert len(failures) + len(delivered) == 200
    assert 70 < len(failures) < 130
    assert all(t - e.message[1] == pytest.approx(2.0) and e.peer == "n1" for t, e in failures)


def test_a_partition_blocks_pubsub_and_streams_then_heals() -> None:
    world, made = world_of(4, stream_timeout=1.0)

    def chatter(node: TinyNode, event: Any, now: float) -> list[Any]:
        if isinstance(event, TimerFired):
            return [Publish("t", now), Send("n3", now)]
        return []

    made["n0"][0].react = chatter
    world.set_groups({"n2": 1, "n3": 1})
    world.inject("n0", TimerFired("during"), at=1.0)
    world.call_at(5.0, world.heal)
    world.inject("n0", TimerFired("after"), at=6.0)
    world.run(10.0)
    early = lambda node: [e for t, e in received(node) if t < 5.0]  # noqa: E731
    assert len(early(made["n1"][0])) == 1  # same side
    assert early(made["n2"][0]) == [] and early(made["n3"][0]) == []
    [failed] = [e for _, e in made["n0"][0].seen if isinstance(e, SendFailed)]
    assert failed.peer == "n3" and failed.message == 1.0
    late = [e.message for t, e in received(made["n3"][0]) if t >= 6.0]
    assert late == [6.0, 6.0]  # the publish and the send both arrive after healing


def test_partition_option_parses_and_rejects_nonsense() -> None:
    assert Partition.parse("30:60:0.25") == Partition(30.0, 60.0, 0.25)
    for bad in ("30:60", "60:30:0.5", "1:2:1.5", "a:b:c"):
        with pytest.raises(SimConfigError):
            Partition.parse(bad)


def test_a_crashed_node_gets_nothing_and_restarts_from_what_it_saved() -> None:
    def ticking(node: TinyNode, event: Any, now: float) -> list[Any]:
        if event == TimerFired("save"):
            return [JobChanged("j1")]
        return [SetTimer("tick", now + 1.0)] if isinstance(event, TimerFired) else []

    world, made = world_of(2, react=ticking)
    first = made["n1"][0]
    first.jobs = {"j1": Snap("j1@rev3")}
    world.inject("n1", TimerFired("save"))
    world.inject("n1", TimerFired("tick"), at=0.5)
    world.run(3.0)
    first.jobs = {"j1": Snap("j1@rev4"), "j2": Snap("j2@rev1")}  # changed, never said so: never saved
    ticks_before = len(first.seen)
    world.crash("n1")
    made["n0"][0].react = lambda node, event, now: [Publish("t", now), Send("n1", now)] if event == TimerFired("x") else []
    world.inject("n0", TimerFired("x"))
    world.run(10.0)
    assert len(first.seen) == ticks_before  # no timers, no messages while down
    assert [type(e) for _, e in made["n0"][0].seen[1:]] == [SendFailed]
    world.start("n1")
    world.run(20.0)
    second = made["n1"][1]
    assert (second.incarnation, second.restored) == (2, ["j1@rev3"])
    assert second.seen == []  # the old incarnation's timer died with it


def test_an_effect_the_world_does_not_know_is_an_error_naming_it() -> None:
    world, made = world_of(1, react=lambda node, event, now: [("not", "an effect")])
    world.inject("n0", TimerFired("go"))
    with pytest.raises(UnknownEffect, match="not.*an effect"):
        world.run(1.0)


def test_set_timer_replaces_and_cancel_timer_cancels() -> None:
    def timers(node: TinyNode, event: Any, now: float) -> list[Any]:
        if event == TimerFired("setup"):
            return [SetTimer("a", 2.0), SetTimer("a", 3.0), SetTimer("b", 2.5), CancelTimer("b"), SetTimer("c", 1.0)]
        return []

    world, made = world_of(1, react=timers)
    world.inject("n0", TimerFired("setup"))
    world.run(10.0)
    fired = [(t, e.key) for t, e in made["n0"][0].seen if isinstance(e, TimerFired) and e.key != "setup"]
    assert fired == [(1.0, "c"), (3.0, "a")]


def test_slow_nodes_process_events_later() -> None:
    world, made = world_of(3, latency_median=0.01, link_sigma=0.0, latency_sigma=0.0)
    world.set_slow("n2", 1.0)
    made["n0"][0].react = lambda node, event, now: [Publish("t", now)]
    world.inject("n0", TimerFired("go"))
    world.run(5.0)
    [(fast, _)] = received(made["n1"][0])
    [(slow, _)] = received(made["n2"][0])
    assert fast == pytest.approx(0.01)
    assert 0.5 <= slow - fast <= 1.5


def flood(node: TinyNode, event: Any, now: float) -> list[Any]:
    """Gossip storm: every message spawns a publish and a send to a peer."""
    if isinstance(event, TimerFired) or (isinstance(event, Received) and event.message < 3):
        depth = 0 if isinstance(event, TimerFired) else event.message + 1
        peer = f"n{(int(node.node_id[1:]) + 1) % 8}"
        return [Publish("t", depth), Send(peer, depth), SetTimer("again", now + 0.3)]
    return []


def trace(seed: int) -> tuple[int, list[tuple[float, str, str]]]:
    world, made = world_of(8, seed=seed, react=flood, loss=0.1)
    world.inject("n0", TimerFired("go"))
    world.crash("n5")
    world.call_at(0.2, lambda: world.start("n5"))
    world.run(2.0)
    return world.events, [(t, n.node_id, repr(e)) for nodes in made.values() for n in nodes for t, e in n.seen]


def test_one_seed_replays_a_run_event_for_event() -> None:
    events, seen = trace(11)
    assert events > 100
    assert trace(11) == (events, seen)
    assert trace(12) != (events, seen)


class Tally(Observer):
    def __init__(self) -> None:
        self.published: list[tuple[object, int, int]] = []

    def on_publish(self, sender: str, message: object, receivers: int, size: int) -> None:
        self.published.append((message, receivers, size))


def test_bytes_are_measured_once_per_message_and_counted_per_receiver() -> None:
    measured: list[object] = []

    def sizer(message: object, sender: str) -> int:
        measured.append(message)
        return len(repr(message))

    tally = Tally()
    world = World(random.Random(1), NetworkConfig(), sizer=sizer, observer=tally, exact_bytes=True)
    shared = ("same", "object")
    for i in range(4):
        world.add_node(f"n{i}", lambda inc, restored, i=i: TinyNode(f"n{i}", react=lambda n, e, t: [Publish("t", shared)] if isinstance(e, TimerFired) else []))
        world.start(f"n{i}")
    for i in range(4):
        world.inject(f"n{i}", TimerFired("go"))
    world.run(1.0)
    assert measured == [shared]  # one object, encoded once
    assert tally.published == [(shared, 3, len(repr(shared)))] * 4


def test_sampled_bytes_encode_only_some_messages_of_a_type() -> None:
    calls = []
    world = World(random.Random(1), sizer=lambda m, s: calls.append(m) or 100)
    sizes = [world._size(("message", k), "n0") for k in range(1000)]
    assert set(sizes) == {100}
    assert 32 < len(calls) < 100
