"""Membership from heartbeats, in virtual time: joins, verdicts, revivals,
restarts, goodbyes, the adaptive interval, and a lossy network converging."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace

import pytest

from protocols.membership import MemberChange, Membership, MembershipConfig, MemberStatus
from protocols.messages import Capacity, NodeInfo, NodeLeft, PolicySummary

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
CAPACITY = Capacity(cpu=4000, memory=8 << 30, disk=100 << 30)


def info(node_id: str, seq: int = 1, incarnation: int = 1, interval: float = 1.0) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        labels={},
        capacity=CAPACITY,
        free=CAPACITY,
        engines=("wasm",),
        publishers=("local",),
        storages=("inline",),
        local_data=(),
        policy=PolicySummary(),
        version="test",
        incarnation=incarnation,
        seq=seq,
        heartbeat_interval=interval,
    )


def membership(**config: float) -> Membership:
    return Membership(info("me", seq=0), MembershipConfig(**config))


def test_a_new_node_joins_alive() -> None:
    m = membership()
    assert m.alive_ids() == ["me"]
    change = m.observe(info("b"), now=0.0)
    assert change == MemberChange("b", None, ALIVE, info("b"))
    assert m.alive_ids() == ["b", "me"]
    assert m.status("b") == ALIVE and m.is_alive("b")
    assert m.info("b") == info("b")
    assert m.version == 1
    assert m.status("stranger") is None and m.info("stranger") is None and not m.is_alive("stranger")


def test_heartbeats_keep_a_member_alive() -> None:
    m = membership()
    m.observe(info("b", seq=1), 0.0)
    for second in range(1, 60):
        assert m.observe(info("b", seq=second + 1), float(second)) is None
        assert m.tick(second + 0.5) == []
    assert m.status("b") == ALIVE
    assert m.version == 1


def test_silence_makes_a_member_suspect_then_dead_in_its_own_intervals() -> None:
    m = membership(suspect_after=3, dead_after=6)
    m.observe(info("slow", interval=2.0), 0.0)
    assert m.tick(5.9) == []
    assert m.tick(6.0) == [MemberChange("slow", ALIVE, SUSPECT, info("slow", interval=2.0))]
    assert m.is_alive("slow") and "slow" in m.alive_ids()  # a suspect still counts
    assert m.version == 1
    assert m.tick(11.9) == []
    assert m.tick(12.0) == [MemberChange("slow", SUSPECT, DEAD, info("slow", interval=2.0))]
    assert not m.is_alive("slow") and m.alive_ids() == ["me"]
    assert m.version == 2
    assert m.tick(100.0) == []


def test_a_late_tick_passes_both_verdicts_in_order() -> None:
    m = membership()
    m.observe(info("b"), 0.0)
    assert [(c.previous, c.status) for c in m.tick(50.0)] == [(ALIVE, SUSPECT), (SUSPECT, DEAD)]


def test_a_suspect_heard_again_is_alive_without_changing_the_alive_set() -> None:
    m = membership()
    m.observe(info("b", seq=1), 0.0)
    m.tick(3.0)
    assert m.status("b") == SUSPECT
    assert m.observe(info("b", seq=2), 3.5) == MemberChange("b", SUSPECT, ALIVE, info("b", seq=2))
    assert m.version == 1
    assert m.tick(6.4) == []  # the clock starts again from the new heartbeat
    assert [c.status for c in m.tick(6.5)] == [SUSPECT]


def test_a_dead_member_heard_again_is_alive() -> None:
    m = membership()
    m.observe(info("b", seq=1), 0.0)
    m.tick(6.0)
    assert m.status("b") == DEAD
    assert m.observe(info("b", seq=9), 20.0) == MemberChange("b", DEAD, ALIVE, info("b", seq=9))
    assert m.alive_ids() == ["b", "me"]
    assert m.version == 3
    assert m.next_check() == 23.0


def test_a_restarted_member_has_a_higher_incarnation_and_is_alive() -> None:
    m = membership()
    m.observe(info("b", seq=500, incarnation=1), 0.0)
    restarted = info("b", seq=1, incarnation=2)
    assert m.observe(restarted, 1.0) is None  # alive all along: only the info changes
    assert m.info("b") == restarted
    m.tick(10.0)
    assert m.status("b") == DEAD
    again = info("b", seq=1, incarnation=3)
    assert m.observe(again, 11.0) == MemberChange("b", DEAD, ALIVE, again)


def test_stale_and_duplicate_heartbeats_are_ignored() -> None:
    m = membership()
    m.observe(info("b", seq=5, incarnation=2), 0.0)
    for stale in (info("b", seq=5, incarnation=2), info("b", seq=4, incarnation=2), info("b", seq=99, incarnation=1)):
        assert m.observe(replace(stale, labels={"stale": "yes"}), 2.0) is None
    assert m.info("b") == info("b", seq=5, incarnation=2)
    assert [c.status for c in m.tick(3.0)] == [SUSPECT]  # they did not count as heard either
    assert m.observe(info("b", seq=5, incarnation=2), 4.0) is None
    assert m.status("b") == SUSPECT


def test_newer_info_is_stored_without_a_change() -> None:
    m = membership()
    m.observe(info("b"), 0.0)
    busier = replace(info("b", seq=2), free=Capacity(cpu=1000))
    assert m.observe(busier, 1.0) is None
    assert m.info("b") == busier
    assert m.alive_infos() == [busier, m.local]


def test_a_graceful_leave_takes_the_member_out_at_once() -> None:
    m = membership()
    m.observe(info("b", seq=3), 0.0)
    change = m.left(NodeLeft("b", incarnation=1), 1.0)
    assert change == MemberChange("b", ALIVE, LEFT, info("b", seq=3))
    assert m.status("b") == LEFT and not m.is_alive("b") and m.alive_ids() == ["me"]
    assert m.version == 2
    assert m.left(NodeLeft("b", incarnation=1), 1.5) is None  # said twice
    assert m.observe(info("b", seq=4), 2.0) is None  # a late heartbeat from before the goodbye
    assert m.status("b") == LEFT
    back = info("b", seq=1, incarnation=2)
    assert m.observe(back, 3.0) == MemberChange("b", LEFT, ALIVE, back)
    assert m.version == 3


def test_a_leave_of_an_older_incarnation_or_a_stranger_is_ignored() -> None:
    m = membership()
    m.observe(info("b", incarnation=3), 0.0)
    assert m.left(NodeLeft("b", incarnation=2), 1.0) is None
    assert m.left(NodeLeft("nobody", incarnation=1), 1.0) is None
    assert m.status("b") == ALIVE and m.status("nobody") is None


def test_a_dead_member_that_leaves_is_reported_left() -> None:
    m = membership()
    m.observe(info("b"), 0.0)
    m.tick(6.0)
    assert m.left(NodeLeft("b", 1), 7.0) == MemberChange("b", DEAD, LEFT, info("b"))
    assert m.version == 2  # it was already out of the alive set


def test_our_own_id_is_ignored() -> None:
    m = membership()
    assert m.observe(info("me", seq=100, incarnation=5), 0.0) is None
    assert m.left(NodeLeft("me", 5), 0.0) is None
    assert m.info("me") == info("me", seq=0) and m.status("me") == ALIVE and m.is_alive("me")
    assert m.all_members() == [(m.local, ALIVE)]
    assert m.next_check() == math.inf


def test_heartbeat_publishes_the_next_seq_and_the_adaptive_interval() -> None:
    m = membership(base_interval=1.0, max_heartbeats_per_second=10)
    first = m.heartbeat(5.0, free=Capacity(cpu=1))
    assert (first.seq, first.heartbeat_interval, first.free, first.started_at) == (1, 1.0, Capacity(cpu=1), 5.0)
    for i in range(9):
        m.observe(info(f"n{i}"), 5.0)
    assert m.heartbeat_interval() == 1.0  # ten nodes at one a second: ten a second
    for i in range(9, 29):
        m.observe(info(f"n{i}"), 5.0)
    assert m.heartbeat_interval() == 3.0  # thirty nodes: each slows down to keep ten a second
    second = m.heartbeat(6.0, labels={"zone": "b"})
    assert (second.seq, second.heartbeat_interval, second.labels) == (2, 3.0, {"zone": "b"})
    assert second.free == Capacity(cpu=1) and second.started_at == 5.0
    assert m.local == second and m.info("me") == second
    m.tick(5.0 + 6.0)  # all thirty go silent and die
    assert m.heartbeat_interval() == 1.0


def test_heartbeat_refuses_to_be_told_what_it_sets_itself() -> None:
    m = membership()
    with pytest.raises(ValueError, match="seq"):
        m.heartbeat(0.0, seq=7)


def test_dead_and_gone_members_are_forgotten_quietly() -> None:
    m = membership(forget_after=600)
    m.observe(info("dead"), 0.0)
    m.observe(info("gone"), 0.0)
    m.left(NodeLeft("gone", 1), 1.0)
    m.tick(6.0)
    assert m.next_check() == 601.0
    assert m.tick(601.0) == []
    assert m.status("gone") is None and m.status("dead") == DEAD
    assert m.tick(606.0) == []
    assert m.status("dead") is None and m.all_members() == [(m.local, ALIVE)]
    assert m.next_check() == math.inf
    assert m.observe(info("dead", seq=2), 700.0) == MemberChange("dead", None, ALIVE, info("dead", seq=2))


def test_next_check_is_the_earliest_real_deadline() -> None:
    m = membership()
    assert m.next_check() == math.inf
    m.observe(info("b"), 0.0)
    m.observe(info("c", interval=2.0), 0.5)
    assert m.next_check() == 3.0
    m.observe(info("b", seq=2), 2.0)  # b's deadline moves, without a heap push
    assert m.next_check() == 5.0
    m.observe(info("b", seq=3), 4.0)
    assert m.next_check() == 6.5  # c's, now the earliest
    assert [c.node_id for c in m.tick(6.5)] == ["c"]
    assert m.next_check() == 7.0  # b suspect at 7
    m.observe(info("c", seq=2, interval=10.0), 8.0)
    m.observe(info("d", interval=5.0), 9.0)  # due at 24
    m.observe(info("c", seq=3, interval=0.5), 9.0)  # a shorter interval brings c's deadline nearer
    assert m.next_check() == 7.0
    m.tick(7.0)
    assert m.next_check() == 10.0  # b dead at 4 + 6; c suspect at 9 + 1.5 = 10.5
    m.tick(10.0)
    assert m.next_check() == 10.5


def test_nonsense_intervals_from_a_peer_fall_back_to_sane_ones() -> None:
    for interval in (math.nan, 0.0, -1.0):
        m = membership(base_interval=2.0)
        m.observe(info("odd", interval=interval), 0.0)
        assert m.next_check() == 6.0
    m = membership()
    m.observe(info("odd", interval=math.inf), 0.0)
    assert m.next_check() == 3 * 3600.0


def test_the_heap_holds_about_one_entry_per_member() -> None:
    m = membership()
    rng = random.Random(1)
    now = 0.0
    seqs = dict.fromkeys((f"n{i}" for i in range(100)), 0)
    for _ in range(5000):
        now += 0.02
        node_id = rng.choice(list(seqs))
        seqs[node_id] += 1
        m.observe(info(node_id, seq=seqs[node_id], interval=2.0), now)
        if m.next_check() <= now:
            m.tick(now)
    assert len(m._heap) <= 2 * len(seqs)


def test_alive_lists_are_cached_until_something_changes() -> None:
    m = membership()
    m.observe(info("b"), 0.0)
    ids, infos = m.alive_ids(), m.alive_infos()
    assert m.alive_ids() is ids and m.alive_infos() is infos
    m.observe(info("c"), 0.0)
    assert m.alive_ids() == ["b", "c", "me"] and m.alive_ids() is not ids
    assert [i.node_id for i in m.alive_infos()] == ["b", "c", "me"]


@pytest.mark.parametrize(
    "fields",
    [{"base_interval": 0}, {"max_heartbeats_per_second": -1}, {"suspect_after": 7, "dead_after": 6}, {"forget_after": -1}],
)
def test_a_nonsense_config_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MembershipConfig(**fields)


# ------------------------------------------------------------ a lossy network


class LossyNetwork:
    """Members heartbeating at each other through a seeded, lossy, jittery
    in-memory link; each member ticks exactly when it asks to."""

    def __init__(self, size: int, seed: int, loss: float) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.members = {f"n{i:02d}": Membership(info(f"n{i:02d}", seq=0)) for i in range(size)}
        self.stopped: set[str] = set()
        self.changes: list[tuple[float, str, MemberChange]] = []
        self.now = 0.0
        self._queue: list[tuple[float, int, str, str, NodeInfo | None]] = []
        self._checks: dict[str, float] = {}
        self._counter = 0
        for node_id in self.members:
            self._at(self.rng.uniform(0, 1), "beat", node_id)

    def run(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            self.now, _, kind, node_id, payload = heapq.heappop(self._queue)
            if node_id in self.stopped:
                continue
            member = self.members[node_id]
            if kind == "beat":
                sent = member.heartbeat(self.now)
                for other in self.members:
                    if other != node_id and self.rng.random() >= self.loss:
                        self._at(self.now + self.rng.uniform(0.001, 0.05), "deliver", other, sent)
                self._at(self.now + sent.heartbeat_interval * self.rng.uniform(0.9, 1.1), "beat", node_id)
            elif kind == "deliver":
                assert payload is not None
                change = member.observe(payload, self.now)
                if change is not None:
                    self.changes.append((self.now, node_id, change))
            elif self._checks.get(node_id) == self.now:
                self.changes.extend((self.now, node_id, change) for change in member.tick(self.now))
            self._schedule_check(node_id)
        self.now = until

    def _schedule_check(self, node_id: str) -> None:
        at = self.members[node_id].next_check()
        if at != math.inf and self._checks.get(node_id) != at:
            self._checks[node_id] = at
            self._at(at, "check", node_id)

    def _at(self, when: float, kind: str, node_id: str, payload: NodeInfo | None = None) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (when, self._counter, kind, node_id, payload))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_lossy_network_agrees_on_its_members_and_on_a_death(seed: int) -> None:
    network = LossyNetwork(size=20, seed=seed, loss=0.1)
    network.run(30.0)
    everyone = sorted(network.members)
    for member in network.members.values():
        assert member.alive_ids() == everyone
    assert not [c for _, _, c in network.changes if c.status == DEAD]

    network.stopped.add("n07")
    stop = network.now
    interval = network.members["n00"].heartbeat_interval()
    network.run(stop + 10 * interval)
    deaths = {observer: when for when, observer, c in network.changes if c.node_id == "n07" and c.status == DEAD}
    survivors = [n for n in everyone if n != "n07"]
    assert sorted(deaths) == survivors
    assert max(deaths.values()) <= stop + (6 + 1) * interval
    for node_id in survivors:
        assert network.members[node_id].alive_ids() == survivors
